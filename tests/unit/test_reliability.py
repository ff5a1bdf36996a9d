"""Issue 16: hostile or broken inputs stop with a message naming the culprit; empty partitions are handled."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import MODELS, ROOT, batches_of, query_batch, random_sequences
from influence.corpus import read_corpus
from influence.engine import names
from influence.engine.eigen import eigendecompose
from influence.engine.factors import FactorSums, fit_covariance, fit_eigenvalue_correction
from influence.engine.model import select_layers
from influence.engine.precondition import precondition_queries
from influence.engine.scores import Scores, scores_table
from influence.engine.sequences import tokenize_corpus
from influence.queries import load_queries

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
        "from influence.queries import load_queries; from influence.runlog import rule_log;"
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


@pytest.fixture(scope="module")
def fitted():
    model = MODELS["llama"]()
    layers = select_layers(model)
    fit = batches_of(random_sequences(8, seed=30), 4)
    covariance = fit_covariance(model, layers, fit, **F64)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, fit, **F64)
    return model, layers, covariance, eigen, correction


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
        precondition_queries(model, layers, ["a", "b"], [query_batch(2, seed=1)], "ekfac", eigen, broken, rank=1, **F64)
