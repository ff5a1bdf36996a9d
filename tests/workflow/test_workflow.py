"""The workflow: lint, a dry run of the default config, and a full tiny run checked by content."""

import re

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import GPU_RULES, IDENTICAL_SEQ, TINY_QUERIES, planned_jobs, snakemake, tiny_config

pytestmark = pytest.mark.workflow  # runs the real Snakemake workflow end to end

PAPER_FIGURES = ["sparsity", "top_share", "layer_shares", "cross_lingual", "query_flip", "phrase_order"]
SAMPLE_FIGURES = ["tfidf_recall", "query_batching", "estimator_agreement"]
FACTORS = "factors/layers~mlp"  # the default layer set's factors, under results/<run>/
SETTING = "layers~mlp_estimator~ekfac_damping~relative-0.1_rank~8_topk~25"  # the tiny config's own setting


def test_lint_is_clean():
    result = snakemake("--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_config_dry_run_plans_the_whole_chain():
    out = snakemake("--dry-run", "--forceall", "--quiet", "rules").stdout
    for rule in (
        "prepare_model",
        "tokenize_corpus",
        "tfidf_filter",
        "fit_covariance",
        "eigendecompose",
        "fit_eigenvalue_correction",
        "precondition_queries",
        "score_shard",
        "aggregate_scores",
        "token_scores",
        "report",
        "score_probes",
        "paper_figures",
        "sample_scores",
        "sample_figures",
    ):
        assert rule in out, out


@pytest.mark.parametrize(
    "override,message",
    [
        ("scoring={'estimator': 'tracin'}", "tracin"),
        ("fitting={'n_sequence': 3}", "n_sequence"),
    ],
)
def test_bad_config_stops_before_any_work(override, message, tmp_path):
    result = snakemake("--dry-run", "--directory", tmp_path, "--config", override, check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_tiny_run_scores(tiny_run):
    _, _, results = tiny_run
    scores_dir = results / "scores" / SETTING
    scores = pd.read_parquet(scores_dir / "scores.parquet")
    candidates = pd.read_parquet(results / "tfidf" / "top_k~25" / "candidates.parquet")
    union = candidates["seq_id"].nunique()
    assert len(scores) == union * len(TINY_QUERIES)
    assert np.isfinite(scores["influence"]).all() and scores["influence"].abs().max() > 0
    layers = scores[[c for c in scores.columns if c.startswith("layer:")]]
    assert layers.shape[1] == 6  # 2 blocks × gate/up/down
    np.testing.assert_allclose(layers.sum(axis=1), scores["influence"], rtol=1e-4, atol=1e-6)
    for _, group in scores.groupby("query_id"):
        assert (group["influence_rank"].to_numpy() == np.arange(1, len(group) + 1)).all()
        assert group["influence"].is_monotonic_decreasing
    top3 = scores[(scores["query_id"] == TINY_QUERIES[0]["id"]) & (scores["influence_rank"] <= 3)]
    assert IDENTICAL_SEQ in set(top3["seq_id"]), top3[["seq_id", "influence"]]
    kept = scores[scores["in_tfidf_top_k"]]
    assert len(kept) == len(candidates) and kept["tfidf_rank"].between(1, 25).all()


def test_tiny_run_tokens_and_report(tiny_run):
    _, _, results = tiny_run
    scores_dir = results / "scores" / SETTING
    top = pd.read_parquet(scores_dir / "top.parquet")
    tokens = pd.read_parquet(scores_dir / "tokens.parquet")
    assert top.groupby("query_id").size().eq(5).all()
    sums = tokens.groupby(["query_id", "seq_id"])["influence"].sum()
    merged = top.set_index(["query_id", "seq_id"])["influence"]
    np.testing.assert_allclose(sums.loc[merged.index], merged, rtol=1e-3, atol=1e-5)
    html = (scores_dir / "report.html").read_text()
    assert all(q["id"] in html for q in TINY_QUERIES) and '<span class="tok"' in html
    assert (results / "logs" / "layers~mlp" / "fit_covariance_0.log").read_text().count("peak RSS") == 1


def test_score_only_change_reuses_factors_and_reruns_resume(tiny_run):
    tmp, config, results = tiny_run
    damped = tiny_config(tmp, name="damped", damping={"mode": "relative", "value": 0.5})
    planned = snakemake("--dry-run", "--quiet", "rules", "--configfile", damped, "--directory", tmp).stdout
    assert "precondition_queries" in planned and "score_shard" in planned
    for rule in ("fit_covariance", "eigendecompose", "fit_eigenvalue_correction", "tokenize_corpus"):
        assert rule not in planned, planned
    # The eigendecomposition's precision is not a fitting-sample setting: the sums are reused.
    single = tiny_config(tmp, name="single", fitting={"eigen_dtype": "float32"})
    jobs = planned_jobs("--configfile", single, "--directory", tmp)
    assert {"eigendecompose", "fit_eigenvalue_correction", "precondition_queries"} <= set(jobs), jobs
    assert not {"fit_covariance", "tokenize_corpus"} & set(jobs), jobs
    # A run killed while scoring shard 1: that shard and everything after it are missing.
    scores_dir = results / "scores" / SETTING
    for name in ("shard_1.parquet", "scores.parquet", "top.parquet", "tokens.parquet", "report.html"):
        (scores_dir / name).unlink()
    jobs = planned_jobs("--configfile", config, "--directory", tmp)
    assert jobs.get("score_shard") == 1, jobs
    assert not {"fit_covariance", "precondition_queries", "tokenize_corpus"} & set(jobs), jobs
    snakemake("--cores", 2, "--configfile", config, "--directory", tmp)
    assert (scores_dir / "shard_1.parquet").exists() and (scores_dir / "report.html").exists()


def test_sharded_fitting_equals_unsharded_and_a_lost_shard_reruns_alone(tiny_run):
    from safetensors.torch import load_file

    tmp, _, results = tiny_run
    config = tiny_config(tmp, name="sharded", run="tiny_sharded", fitting={"n_shards": 3})
    setting = SETTING
    sharded = tmp / "results" / "tiny_sharded"
    target = f"results/tiny_sharded/scores/{setting}/scores.parquet"  # relative to --directory
    snakemake("--cores", 2, "--configfile", config, "--directory", tmp, target)
    assert len(list((sharded / FACTORS / "covariance").glob("shard_*.safetensors"))) == 3
    for factor in ("covariance", "lambda"):
        whole, parts = (load_file(r / FACTORS / f"{factor}.safetensors") for r in (results, sharded))
        assert whole.keys() == parts.keys()
        for key, tensor in whole.items():  # the same labels are drawn per batch: equal up to summation order
            np.testing.assert_allclose(
                parts[key].numpy(), tensor.numpy(), rtol=1e-5, atol=1e-6 * tensor.abs().max().item()
            )
    one, three = (
        pd.read_parquet(r / "scores" / setting / "scores.parquet").set_index(["query_id", "seq_id"])
        for r in (results, sharded)
    )
    np.testing.assert_allclose(
        three.loc[one.index, "influence"], one["influence"], rtol=1e-4, atol=1e-6 * one["influence"].abs().max()
    )
    # A run killed while fitting shard 1: that shard and everything after it are missing.
    import shutil

    for lost in ("covariance/shard_1.safetensors", "covariance.safetensors", "eigen.safetensors"):
        (sharded / FACTORS / lost).unlink()
    for lost in (f"{FACTORS}/lambda", "queries", "scores"):
        shutil.rmtree(sharded / lost)
    jobs = planned_jobs("--configfile", config, "--directory", tmp, target)
    assert jobs.get("fit_covariance") == 1 and jobs.get("fit_eigenvalue_correction") == 3, jobs
    assert "tokenize_corpus" not in jobs, jobs


def test_sweep_reuses_factors_and_summarises_each_point(tiny_run):
    tmp, _, results = tiny_run
    config = tmp / "config_sweep.yaml"
    sweep = {"damping": [1.0], "query_rank": [None], "tfidf_top_k": [10], "estimator": ["identity"]}
    config.write_text(yaml.safe_dump({**yaml.safe_load(tiny_config(tmp).read_text()), "sweep": sweep}))
    target = "results/tiny/sweep/summary.parquet"  # relative to --directory
    jobs = planned_jobs("--configfile", config, "--directory", tmp, target)
    # 4 new points: damping, full rank and the identity estimator precondition anew; TF-IDF k reuses the queries
    assert jobs == {
        "tfidf_filter": 1,
        "precondition_queries": 3,
        "score_shard": 8,
        "aggregate_scores": 4,
        "sweep_summary": 1,
    }, jobs
    snakemake("--cores", 2, "--configfile", config, "--directory", tmp, target)
    summary = pd.read_parquet(results / "sweep" / "summary.parquet").set_index("changed")
    assert sorted(summary.index) == ["base", "damping", "estimator", "rank", "top_k"]
    assert summary.loc["base", ["spearman_q50", "top_overlap_q50"]].tolist() == [1.0, 1.0]
    # rank 8 keeps each tiny layer's preconditioned gradient almost whole; identity ignores the curvature
    assert summary.loc["rank", "spearman_q50"] > 0.99
    assert summary.loc["estimator", "spearman_q50"] < summary.loc["rank", "spearman_q50"]
    assert summary.loc["top_k", "spearman_q50"] > 0.999  # the same scores on fewer candidates
    assert (results / "sweep" / "sweep.png").stat().st_size > 10_000
    # A point is an ordinary setting: a run configured at damping 1.0 finds its scores already there.
    damped = tiny_config(tmp, name="damped_1", damping={"mode": "relative", "value": 1.0})
    point = summary.loc["damping", "setting"]
    assert planned_jobs("--configfile", damped, "--directory", tmp, f"results/tiny/scores/{point}/scores.parquet") == {}


def test_tiny_run_paper_figures(tiny_run):
    import json

    _, _, results = tiny_run
    figures = results / "figures" / SETTING
    for name in PAPER_FIGURES:
        assert (figures / f"{name}.png").stat().st_size > 1000
        assert (figures / f"{name}.parquet").exists()
    shares = pd.read_parquet(figures / "layer_shares.parquet")
    np.testing.assert_allclose(shares.groupby("query_id")["share"].sum(), 1.0, rtol=1e-9)
    cross = pd.read_parquet(figures / "cross_lingual.parquet")
    assert list(cross["query_id"]) == ["capital_france_fr"] and np.isfinite(cross["relative_influence"]).all()
    top = pd.read_parquet(figures / "top_share.parquet")
    assert top["share"].between(0, 1).all()
    captions = json.loads((figures / "captions.json").read_text())
    assert set(captions) == set(PAPER_FIGURES) and all(len(text) > 50 for text in captions.values())
    assert "`order: flipped`" in captions["query_flip"]  # the tiny queries have no flipped variant: skipped
    best = pd.read_parquet(figures / "max_influence.parquet").set_index("query_id")
    np.testing.assert_allclose(best["per_completion_token"] * best["completion_tokens"], best["influence"])


def test_tiny_run_phrase_order_probes(tiny_run):
    _, _, results = tiny_run
    scores_dir = results / "scores" / SETTING
    probe_scores = pd.read_parquet(scores_dir / "probes.parquet")
    # 4 groups x 4 templates for each of the two queries with tags a, b and a templated kind, on every query
    assert probe_scores.groupby("fact_id")["seq_id"].nunique().to_dict() == {"capital_france": 16, "planet_largest": 16}
    assert set(probe_scores["query_id"]) == {q["id"] for q in TINY_QUERIES}
    assert probe_scores.loc[probe_scores["seq_id"].str.endswith("same_order:0"), "text"].str.contains("Paris").any()
    summary = pd.read_parquet(results / "figures" / SETTING / "phrase_order.parquet")
    assert set(summary["query_id"]) == {"capital_france", "planet_largest"}
    assert set(summary["group"]) == {"same_order", "flipped", "a_removed", "b_removed", "other_fact"}
    own = summary[summary["group"] != "other_fact"]
    assert (own["n"] == 4).all() and (own["ci_low"] <= own["mean"]).all() and (own["mean"] <= own["ci_high"]).all()
    assert summary["corpus_percentile"].between(0, 1).all()


def test_tiny_run_sample_analyses(tiny_run):
    _, _, results = tiny_run
    sample = next((results / "analysis").iterdir())
    scores = pd.read_parquet(sample / "sample_scores.parquet")
    assert scores.groupby(["estimator", "query_rank"])["seq_id"].nunique().eq(60).all()
    recall = pd.read_parquet(sample / "tfidf_recall.parquet")
    assert (recall.loc[recall["k_prime"] == 60, "recall"] == 1).all()  # k′ = the whole sample keeps everything
    assert recall.groupby("query_id")["recall"].apply(lambda r: r.is_monotonic_increasing).all()
    batching = pd.read_parquet(sample / "query_batching.parquet")
    exact = batching[batching["approx_rank"] == 32]  # rank 32 ≥ every tiny layer's smaller side: exact
    assert (exact["spearman"] > 0.9999).all() and (exact["relative_l2"] < 1e-4).all()
    agreement = pd.read_parquet(sample / "estimator_agreement.parquet")
    assert len(agreement) == 6 and agreement["spearman_mean"].between(-1, 1).all()
    for name in ("tfidf_recall", "query_batching", "estimator_agreement"):
        assert (sample / f"{name}.png").stat().st_size > 1000


def test_snakemake_report_collects_every_figure(tiny_run):
    tmp, config, _ = tiny_run
    out = tmp / "snakemake_report.html"
    snakemake("--report", out, "--configfile", config, "--directory", tmp)
    page = out.read_text()
    for name in [f"{figure}.png" for figure in PAPER_FIGURES + SAMPLE_FIGURES] + ["report.html"]:
        assert name in page, name


def test_gpu_rules_ask_for_the_configured_gpus_and_cpu_rules_for_none(tmp_path):
    """`gpu` and `gpu_model` reach only the rules that run the model (the SLURM plugin turns them into --gpus)."""
    config = tmp_path / "gpus.yaml"
    config.write_text("resources: {gpu: 2, gpu_model: a100}\n")
    out = snakemake("--dry-run", "--forceall", "--configfile", config, "--directory", tmp_path).stdout
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(?:.*\n)*?    resources: (.*)$", out, flags=re.M)
    asked = {rule: "gpu=2" in res and "gpu_model=a100" in res for rule, res in jobs}
    assert {rule for rule, gpu in asked.items() if gpu} == GPU_RULES
    assert all("gpu=0" in res for rule, res in jobs if not asked[rule] and rule != "all"), jobs


def test_ekfac_cg_preconditions_from_the_fitting_sample_and_starts_at_ekfac(tiny_run):
    """ekfac_cg reuses the factors, reads the corpus for its refinement set, logs its cache mode and residuals;
    at 0 steps its queries are EK-FAC's."""
    from safetensors.torch import load_file

    tmp, _, results = tiny_run
    queries = "queries/layers~mlp_estimator~{}_damping~relative-0.1_rank~full/preconditioned.safetensors"
    config = tmp / "config_cg.yaml"
    base = yaml.safe_load(tiny_config(tmp, query_rank=None).read_text())
    outputs = {}
    for steps, estimator in ((0, "ekfac_cg"), (5, "ekfac")):  # ekfac ignores the refine settings
        base["scoring"] = {**base["scoring"], "estimator": estimator, "refine": {"steps": steps}}
        config.write_text(yaml.safe_dump(base))
        target = f"results/tiny/{queries.format(estimator)}"
        jobs = planned_jobs("--configfile", config, "--directory", tmp, target)
        # factors and corpus are reused; full-rank EK-FAC queries may exist already (the sweep test builds them)
        expected = {"precondition_queries"} if estimator == "ekfac_cg" else {"precondition_queries", None}
        assert set(jobs) | {None} <= expected | {None} and (estimator != "ekfac_cg" or jobs), jobs
        snakemake("--cores", 2, "--configfile", config, "--directory", tmp, target)
        outputs[estimator] = load_file(results / queries.format(estimator))
    for key, tensor in outputs["ekfac"].items():
        np.testing.assert_allclose(outputs["ekfac_cg"][key].numpy(), tensor.numpy(), rtol=1e-4, atol=1e-7)
    base["scoring"]["estimator"] = "ekfac_cg"
    config.write_text(yaml.safe_dump(base))
    target = f"results/tiny/{queries.format('ekfac_cg')}"
    snakemake("--cores", 2, "--configfile", config, "--directory", tmp, target)  # refine steps changed: reruns
    log = results / "logs" / "layers~mlp_estimator~ekfac_cg_damping~relative-0.1_rank~full" / "precondition_queries.log"
    text = log.read_text()
    assert "96 sequences" in text and "mode 'gradients'" in text and "CG steps" in text, text
    refined = load_file(results / queries.format("ekfac_cg"))
    assert any(not np.allclose(refined[k].numpy(), t.numpy(), rtol=1e-3) for k, t in outputs["ekfac"].items())
