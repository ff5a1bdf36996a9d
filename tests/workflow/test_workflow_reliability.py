"""Issue 16's probes through the real Snakemake CLI: each stops naming its culprit or completes correctly."""

import json

import pandas as pd
import pytest
import yaml
from helpers import TINY_QUERIES, snakemake, tiny_config

pytestmark = pytest.mark.workflow  # runs the real Snakemake workflow end to end

SETTING_TOPK1 = "layers~mlp_estimator~ekfac_damping~relative-0.1_rank~8_topk~1"


def _failing(*args) -> str:
    result = snakemake(*args, check=False)
    assert result.returncode != 0, result.stdout[-2000:]
    return result.stdout + result.stderr


def test_run_name_must_stay_under_results(tmp_path):
    out = _failing("--dry-run", "--directory", tmp_path, "--config", "run=..")
    assert "config key run" in out and "'..'" in out
    assert list(tmp_path.iterdir()) in ([], [tmp_path / ".snakemake"])  # nothing written beside results/


def test_unknown_top_level_key_is_one_line_naming_the_allowed_keys(tmp_path):
    out = _failing("--dry-run", "--directory", tmp_path, "--config", "scorring={'top_n': 3}")
    assert "unknown config key 'scorring' at the top level; allowed keys: run, model," in out
    assert len(out.splitlines()) < 15, out  # not the whole schema


def test_invalid_layer_regex_names_the_key_and_the_regex(tmp_path):
    out = _failing("--dry-run", "--directory", tmp_path, "--config", "model={'layers': 'mlp(['}")
    assert "model.layers 'mlp([' is not a valid regular expression" in out


def test_more_fitting_shards_than_batches_are_capped(tmp_path):
    config = tmp_path / "one_batch.yaml"
    config.write_text(yaml.safe_dump({"fitting": {"n_sequences": 16, "batch_size": 16, "n_shards": 2}}))
    result = snakemake("--dry-run", "--forceall", "--configfile", config, "--directory", tmp_path)
    out = result.stdout + result.stderr
    assert "fitting.n_shards 2 exceeds the 1 batch(es)" in out and "fitting in 1 shard(s)" in out
    assert "shard_1.safetensors" not in out and "covariance/shard_0.safetensors" in out


def test_empty_scoring_shards_write_empty_tables(tiny_run):
    """top_k 1 over 3 queries keeps at most 3 candidates: 4 shards leave at least one empty."""
    tmp, _, results = tiny_run
    config = tiny_config(tmp, name="topk1", n_shards=4)
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "tfidf": {**data["tfidf"], "top_k": 1}}))
    snakemake(
        "--cores", 2, "--configfile", config, "--directory", tmp, f"results/tiny/scores/{SETTING_TOPK1}/top.parquet"
    )
    shards = [pd.read_parquet(results / "scores" / SETTING_TOPK1 / f"shard_{i}.parquet") for i in range(4)]
    assert any(s.empty for s in shards)
    assert all(list(s.columns) == list(shards[0].columns) for s in shards) and "layer:" in shards[0].columns[-1]
    scores = pd.read_parquet(results / "scores" / SETTING_TOPK1 / "scores.parquet")
    candidates = pd.read_parquet(results / "tfidf" / "top_k~1" / "candidates.parquet")
    assert len(scores) == candidates["seq_id"].nunique() * len(TINY_QUERIES)


@pytest.mark.parametrize(
    "lines,message",
    [
        ([{"text": "a"}, {"text": ""}, {"text": "b"}], "corpus.jsonl: all 3 documents are too short"),
        ([{"text": "plain"}, {"text": "caf\xe9"}], "corpus.jsonl:2: byte 0xe9 at byte offset 31 is not UTF-8"),
    ],
    ids=["too_short", "latin1"],
)
def test_broken_corpus_stops_tokenize_corpus_naming_the_file(tiny_run, tmp_path, lines, message):
    tmp, _, _ = tiny_run
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines).encode("latin-1"))
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"run": "broken", "model": {"source": str(tmp / "model")}, "corpus": {"path": str(corpus)}})
    )
    out = _failing("--cores", 1, "--configfile", config, "--directory", tmp_path, "results/broken/corpus/tokens.npy")
    log = (tmp_path / "results" / "broken" / "logs" / "tokenize_corpus.log").read_text(encoding="utf-8")
    assert message in log, out[-3000:]
    assert not (tmp_path / "results" / "broken" / "corpus" / "sequences.parquet").exists()


def test_weights_changed_in_place_rerun_prepare_model(tiny_run, tmp_path):
    import shutil

    from helpers import planned_jobs

    tmp, _, _ = tiny_run
    shutil.copytree(tmp / "model", tmp_path / "model")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"run": "stamp", "model": {"source": str(tmp_path / "model")}}))
    args = ("--configfile", config, "--directory", tmp_path, "results/stamp/model")
    snakemake("--cores", 1, *args)
    recorded = json.loads((tmp_path / "results" / "stamp" / "model" / "source_files.json").read_text())
    assert "model.safetensors" in recorded["files"]
    assert planned_jobs(*args) == {}
    weights = tmp_path / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(64)  # same size, new content, written in place: the directory's time stamp stays
    mtime = (tmp_path / "model").stat().st_mtime_ns
    weights.write_bytes(bytes(data))
    assert (tmp_path / "model").stat().st_mtime_ns == mtime
    assert planned_jobs(*args) == {"prepare_model": 1}


def test_damaged_factor_file_stops_the_run_naming_it(tiny_run):
    """The issue's probe: 64 bytes in the middle of lambda.safetensors overwritten, same size."""
    import os

    tmp, _, results = tiny_run
    path = results / "factors" / "layers~mlp" / "lambda.safetensors"
    original, stat = path.read_bytes(), path.stat()
    damaged = bytearray(original)
    middle = len(damaged) // 2
    damaged[middle : middle + 64] = bytes((b + 97) % 256 for b in damaged[middle : middle + 64])
    config = tiny_config(tmp, name="damaged", damping={"mode": "relative", "value": 0.7})  # a new setting reads Λ
    target = "results/tiny/queries/layers~mlp_estimator~ekfac_damping~relative-0.7_rank~8/preconditioned.safetensors"
    try:
        path.write_bytes(bytes(damaged))
        assert path.stat().st_size == stat.st_size
        out = _failing("--cores", 1, "--configfile", config, "--directory", tmp, target)
    finally:  # the session's tiny run stays as it was, time stamp included
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    log = results / "logs" / "layers~mlp_estimator~ekfac_damping~relative-0.7_rank~8" / "precondition_queries.log"
    text = log.read_text(encoding="utf-8") if log.exists() else out
    assert f"{path.relative_to(tmp)} is damaged" in text + out and "Delete it and rerun" in text + out, out[-3000:]
