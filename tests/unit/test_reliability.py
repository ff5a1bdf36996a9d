"""Issue 16: hostile or broken inputs stop with a message naming the culprit; empty partitions are handled."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from helpers import MODELS, ROOT, query_batch
from influence.engine import artefacts, files, names
from influence.engine.containers import FactorSums
from influence.engine.model import select_layers
from influence.engine.precondition import precondition_queries
from influence.engine.scores import Scores, scores_table
from influence.engine.sequences import tokenize_corpus
from influence.inputs.corpus import read_corpus
from influence.inputs.queries import load_queries

F64 = dict(dtype=torch.float64, progress=False)


@pytest.mark.parametrize("suffix", [".jsonl", ".txt", ".csv"])
def test_latin1_corpus_names_file_line_and_byte_offset(tmp_path, suffix):
    path = tmp_path / f"corpus{suffix}"
    lines = {
        ".jsonl": ['{"text": "plain ascii"}', '{"text": "caf\xe9 au lait"}'],
        ".txt": ["plain ascii", "caf\xe9 au lait"],
        ".csv": ["text", "caf\xe9 au lait"],
    }[suffix]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    offset = path.read_bytes().index(b"\xe9")
    with pytest.raises(ValueError) as error:
        read_corpus(path)
    message = str(error.value)
    assert f"{path}:2:" in message and f"byte offset {offset}" in message and "iconv -f latin1" in message


def test_malformed_queries_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "queries.yaml"
    path.write_text('- id: a\n  prompt: "x"\n  completion: "y\n- id: b\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:5:\d+: not valid YAML"):
        load_queries(path)


def test_queries_and_report_are_utf8_under_the_c_locale(tmp_path):
    """With LC_ALL=C and neither UTF-8 mode nor locale coercion, Python's default encoding is ASCII."""
    path = tmp_path / "queries.yaml"
    path.write_text('- {id: smile, prompt: "Emoji 🙂 and café", completion: " ünïcode"}\n', encoding="utf-8")
    out = tmp_path / "report.log"
    code = (
        "import sys, logging; sys.path.insert(0, 'scripts');"
        "from influence.inputs.queries import load_queries; from influence.run.runlog import rule_log;"
        f"q = load_queries({str(path)!r})[0];"
        f"ctx = rule_log({str(out)!r}, 'probe', prompt=q.prompt)\n"
        "with ctx as (log, stats): log.info(q.prompt + q.completion)\n"
        "print(q.prompt.encode('unicode_escape').decode())"
    )
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": "ascii"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Emoji 🙂 and café ünïcode" in out.read_text(encoding="utf-8")


def test_invalid_layer_regex_names_the_pattern():
    with pytest.raises(ValueError, match=r"layer pattern 'mlp\(\[' is not a valid regular expression"):
        select_layers(MODELS["llama"](), "mlp([")


class CharTokenizer:
    def __call__(self, texts, add_special_tokens=True, truncation=True, max_length=None):
        return {"input_ids": [[ord(c) for c in t][:max_length] for t in texts]}


def test_corpus_without_a_usable_sequence_stops_naming_the_file(tmp_path):
    corpus = pd.DataFrame({"seq_id": ["0", "1", "2"], "text": ["a", "", "b"]})
    with pytest.raises(ValueError, match="corpus.jsonl: all 3 documents are too short"):
        tokenize_corpus(CharTokenizer(), corpus, 8, tmp_path, source="corpus.jsonl")
    assert not (tmp_path / "sequences.parquet").exists()


def test_empty_scoring_shard_gives_an_empty_table_with_the_columns():
    layers = ["model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"]
    empty = Scores(torch.zeros(0, 3), torch.zeros(0, 3, 2), layers)
    table = scores_table(empty, [], ["q1", "q2", "q3"])
    assert table.empty
    assert list(table.columns) == ["query_id", "seq_id", "influence"] + [names.LAYER_PREFIX + m for m in layers]


def test_a_fitting_shard_without_batches_merges_as_nothing(fitted):
    _, _, covariance, _, _ = fitted
    empty = FactorSums()
    for merged in (covariance.merge(empty), empty.merge(covariance)):
        assert (merged.n_tokens, merged.n_sequences) == (covariance.n_tokens, covariance.n_sequences)
        assert merged.sums.keys() == covariance.sums.keys()


def test_nan_in_a_factor_at_low_query_rank_names_the_layer(fitted):
    model, layers, _, eigen, correction = fitted
    broken = FactorSums(
        {m: {k: t.clone() for k, t in fs.items()} for m, fs in correction.sums.items()},
        correction.n_tokens,
        correction.n_sequences,
    )
    layer = "model.layers.1.mlp.gate_proj"
    broken.sums[layer][names.EIGENVALUE_CORRECTION][0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=f"layer {layer}"):
        precondition_queries(
            model,
            layers,
            ["a", "b"],
            [query_batch(2, seed=1)],
            estimator="ekfac",
            eigen=eigen,
            correction=broken,
            rank=1,
            **F64,
        )


def _overwrite_middle(path, n: int = 64) -> None:
    """The issue's probe: 64 bytes in the middle of the file replaced, same size (as a disk error would)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + n] = bytes((b + 97) % 256 for b in data[middle : middle + n])
    path.write_bytes(bytes(data))


def test_damaged_factor_file_is_refused_naming_it(fitted, tmp_path):
    from influence.engine.model import fingerprint

    _, layers, _, eigen, correction = fitted
    digest = fingerprint(layers)
    path = tmp_path / "lambda.safetensors"
    artefacts.save_factor_sums(path, correction, names.KIND_CORRECTION, digest, {})
    artefacts.load_factor_sums(path, names.KIND_CORRECTION, digest)  # sound before
    size = path.stat().st_size
    _overwrite_middle(path)
    assert path.stat().st_size == size
    with pytest.raises(
        ValueError, match=rf"{path} is damaged: its data do not match the checksum.*Delete it and rerun"
    ):
        artefacts.load_factor_sums(path, names.KIND_CORRECTION, digest)


@pytest.mark.parametrize(
    "kind,factor,value,message",
    [
        (names.KIND_CORRECTION, names.EIGENVALUE_CORRECTION, 3.3e31, "beyond any plausible"),
        (names.KIND_CORRECTION, names.EIGENVALUE_CORRECTION, -1.0, "negative eigenvalue"),
        (names.KIND_CORRECTION, names.EIGENVALUE_CORRECTION, float("nan"), "NaN or Inf"),
        (names.KIND_EIGEN, names.GRADIENT_EIGENVALUES, -5.0, "negative eigenvalue"),
        (names.KIND_COVARIANCE, names.ACTIVATION_COVARIANCE, 1e35, "beyond any plausible"),
    ],
)
def test_impossible_factor_values_are_refused_naming_file_and_layer(fitted, tmp_path, kind, factor, value, message):
    """A file with a right checksum but impossible numbers (written by a broken computation)."""
    from influence.engine.model import fingerprint

    _, layers, covariance, eigen, correction = fitted
    layer = "model.layers.1.mlp.down_proj"
    path = tmp_path / f"{kind}.safetensors"
    if kind == names.KIND_EIGEN:
        broken = {m: {k: t.clone() for k, t in fs.items()} for m, fs in eigen.items()}
        broken[layer][factor][-1] = value
        artefacts.save_eigen(path, broken, fingerprint(layers), {})
        load = lambda: artefacts.load_eigen(path)  # noqa: E731
    else:
        sums = covariance if kind == names.KIND_COVARIANCE else correction
        broken = FactorSums({m: {k: t.clone() for k, t in fs.items()} for m, fs in sums.sums.items()}, 10, 10)
        broken.sums[layer][factor].view(-1)[0] = value
        artefacts.save_factor_sums(path, broken, kind, fingerprint(layers), {})
        load = lambda: artefacts.load_factor_sums(path, kind)  # noqa: E731
    with pytest.raises(ValueError, match=rf"{path} is damaged: {factor} of layer {layer} .*{message}"):
        load()


def test_tables_carry_a_checksum_verified_on_load(tmp_path):

    frame = pd.DataFrame(
        {
            "query_id": ["q1", "q2"] * 500,
            "seq_id": [f"doc {i} ✓" for i in range(1000)],
            "influence": torch.randn(1000, dtype=torch.float64).numpy(),
            "tfidf_score": [None, 0.5] * 500,
            "in_top_k": [True, False] * 500,
        }
    )
    path = tmp_path / "scores.parquet"
    files.write_table(frame, path, note="kept")
    loaded, metadata = files.read_table_with_metadata(path)
    pd.testing.assert_frame_equal(loaded, frame)
    assert metadata == {"note": "kept"}
    empty = frame.iloc[:0]
    files.write_table(empty, tmp_path / "empty.parquet")
    assert list(files.read_table(tmp_path / "empty.parquet").columns) == list(frame.columns)
    _overwrite_middle(path)
    with pytest.raises(ValueError, match=rf"{path} is damaged.*Delete it and rerun"):
        files.read_table(path)


def test_damaged_token_file_is_refused(tmp_path):
    from influence.engine.sequences import TokenStore

    corpus = pd.DataFrame(
        {"seq_id": [str(i) for i in range(50)], "text": [f"document number {i}" * 5 for i in range(50)]}
    )
    tokenize_corpus(CharTokenizer(), corpus, 64, tmp_path, source="corpus.jsonl")
    assert len(TokenStore(tmp_path).ids("3")) == 64
    _overwrite_middle(tmp_path / "tokens.npy")
    with pytest.raises(ValueError, match="tokens.npy is damaged"):
        TokenStore(tmp_path)
