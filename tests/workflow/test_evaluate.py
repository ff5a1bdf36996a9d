"""The `evaluate` target: planned on the default config, run end to end on a tiny evaluation config."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import snakemake
from influence.evaluation.measures import TABLE_COLUMNS

pytestmark = pytest.mark.workflow  # runs the real Snakemake workflow end to end

TINY_EVALUATION = {
    "seeds": [0],
    "models": ["tiny", "finetuned"],
    "max_tokens": 32,
    "top_k": 10,
    "planted": {"n_facts": 4, "k": 3, "n_distractors": 2, "fillers": 1, "difficulty": ["easy", "hard"]},
    # hidden 16: the iHVP job builds the dense Gauss-Newton reference from P unit-vector products (P 3,072 here)
    "tiny": {"hidden_size": 16, "intermediate_size": 32, "n_layers": 2, "n_heads": 4, "epochs": 80, "batch_size": 8},
    "finetune": {"max_epochs": 1, "retrains": {"lds_subsets": 3, "qld_facts": 2, "difficulties": ["easy"]}},
    "scoring": {"query_rank": 8},
    "lds": {"n_subsets": 5},
    "qld": {"n_controls": 2, "max_queries_per_retrain": 4},
    "ihvp": {
        "dampings": [0.1, 1.0],
        "headline_damping": 0.1,
        "lissa": {"depth": 200},
        "cg_steps": 10,
        "refine_fractions": [0.5],
    },
}
EVAL_RULES = (
    "planted_corpus",
    "train_tiny",
    "finetune_model",
    "fact_scores",
    "lds_retrain",
    "qld_retrain",
    "ihvp_accuracy",
    "evaluation_summary",
    "evaluate",
)


def test_default_evaluate_target_plans_every_rule():
    out = snakemake("evaluate", "--dry-run", "--forceall", "--quiet", "rules").stdout
    for rule in EVAL_RULES:
        assert rule in out, out
    assert "score_shard" not in out  # the evaluation needs the run's model, not its scores


@pytest.mark.parametrize(
    "evaluation,message",
    [
        ({"models": ["gpt"]}, "gpt"),
        ({"ihvp": {"dampings": [1.0], "headline_damping": 0.1}}, "headline_damping"),
        ({"planted": {"difficulty": ["medium"]}}, "difficulty"),
        ({"qld": {"k": 1000}}, "evaluation.qld.k"),
        ({"qld": {"fraction": 1.5}}, "fraction"),
        ({"lds": {"fraction": 0.0}}, "fraction"),
        ({"seeds": []}, "seeds"),
        ({"finetune": {"seeds": [7]}}, "evaluation.finetune.seeds"),
        (
            {
                "models": ["tiny", "finetuned"],
                "planted": {"difficulty": ["easy"]},
                "finetune": {"retrains": {"difficulties": ["hard"]}},
            },
            "evaluation.finetune.retrains.difficulties",
        ),
    ],
)
def test_bad_evaluation_config_stops_before_any_work(evaluation, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"evaluation": evaluation}))
    result = snakemake("evaluate", "--dry-run", "--directory", tmp_path, "--configfile", path, check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def evaluation(tiny_run):
    tmp, config, results = tiny_run
    settings = yaml.safe_load(config.read_text())
    path = tmp / "config_evaluation.yaml"
    # 10 CG steps for ekfac_cg's row (the default 100 cost 8 CG runs of 100 passes in ihvp_accuracy); only ekfac_cg
    # jobs read scoring.refine, so the tiny run's outputs stay up to date; 20 ASTRA steps likewise
    scoring = {
        **settings["scoring"],
        "refine": {**settings["scoring"].get("refine", {}), "steps": 10},
        "astra": {**settings["scoring"].get("astra", {}), "steps": 20},
    }
    path.write_text(yaml.safe_dump({**settings, "scoring": scoring, "evaluation": TINY_EVALUATION}))
    snakemake("evaluate", "--cores", 2, "--configfile", path, "--directory", tmp)
    return results / "evaluation"


def test_evaluation_table_covers_every_estimator_measure_and_model(evaluation):
    from influence.engine.estimators import BASELINES, SCORING_ESTIMATORS

    table = pd.read_parquet(evaluation / "evaluation.parquet")
    assert list(table.columns) == TABLE_COLUMNS
    assert set(table["difficulty"]) == {"easy", "hard"}
    tracing = table[table["measure"] == "recall_at_10"]
    # from the registry: later estimators join by themselves; ekfac_matched is EK-FAC at ekfac_astra's damping
    every = set(SCORING_ESTIMATORS) | set(BASELINES) | {"ekfac_matched"}
    refined = every - {"ekfac_cg", "ekfac_astra"}  # evaluation.scoring.cg_models and astra_models: [tiny]
    for difficulty in ("easy", "hard"):
        for model in ("tiny", "finetuned"):
            chosen = tracing[(tracing["model"] == model) & (tracing["difficulty"] == difficulty)]
            assert set(chosen["estimator"]) == (every if model == "tiny" else refined)
    assert set(tracing["variant"]) == {"all", "original", "paraphrase", "translated", "flipped"}
    assert set(table[table["measure"] == "spearman"]["estimator"]) == {
        "ekfac",
        "ekfac_cg",
        "ekfac_astra",
        "kfac",
        "identity",
        "lissa",
        "block_exact",
    }
    paired = table[table["measure"] == "difference:lds"]
    assert {"ekfac − bm25", "ekfac_astra − ekfac", "ekfac_cosine − ekfac"} <= set(
        paired[paired["model"] == "tiny"]["estimator"]
    )
    assert "ekfac_astra − ekfac" not in set(paired[paired["model"] == "finetuned"]["estimator"])
    for model, scored in (("tiny", every), ("finetuned", refined)):
        lds = table[(table["measure"] == "lds") & (table["model"] == model)]
        assert set(lds["estimator"]) == scored and set(lds["variant"]) == {"all", "seed~0"}
        assert set(lds[lds["variant"] == "seed~0"]["interval"]) == {"bootstrap over subsets"}
        qld = table[(table["measure"] == "qld") & (table["model"] == model)]
        retrained = {"easy", "hard"} if model == "tiny" else {"easy"}  # finetune.retrains.difficulties: [easy]
        assert set(qld["estimator"]) == scored and set(qld["difficulty"]) == set(lds["difficulty"]) == retrained
        assert "random" in set(table[(table["measure"] == "qld_raw") & (table["model"] == model)]["estimator"])
        # tiny: the 4 original-wording queries; finetuned: those of the first 2 facts (finetune.retrains.qld_facts)
        assert (qld["n"] == (4 if model == "tiny" else 2)).all()
    assert set(table[table["measure"] == "mrr"]["interval"]) == {"bootstrap over facts"}
    bounded = table[table["measure"].isin(["recall_at_10", "mrr", "accuracy"])]["value"]
    assert bounded.between(0, 1).all()
    assert table[table["measure"].isin(["lds", "spearman"])]["value"].dropna().between(-1, 1).all()
    ordered = table.dropna(subset=["ci_low"])
    assert (ordered["ci_low"] <= ordered["value"] + 1e-12).all() and (
        ordered["value"] <= ordered["ci_high"] + 1e-12
    ).all()
    # Known answers: on easy every planted document names both entities of the query, distractors only one.
    bm25 = tracing[(tracing["estimator"] == "bm25") & (tracing["variant"] == "original")]
    assert np.allclose(bm25[bm25["difficulty"] == "easy"]["value"], 1.0)
    accuracy = table[(table["measure"] == "accuracy") & (table["model"] == "tiny") & (table["variant"] == "original")]
    accuracy = accuracy.set_index("difficulty")["value"]
    assert accuracy["easy"] >= 0.5  # the tiny model learned the facts it is traced on
    assert 0 <= accuracy["hard"] <= 1  # reported; on 4 facts and 80 epochs the paraphrase-only plants are not learned


def test_qld_retrains_are_shared_and_recorded(evaluation):
    for difficulty in ("easy", "hard"):
        cell = evaluation / f"difficulty~{difficulty}" / "seed~0" / "tiny"
        outcomes = pd.read_parquet(cell / "qld_outcomes.parquet")
        assert outcomes["retrain"].nunique() < len(outcomes)  # retrains were shared
        per_retrain = outcomes.groupby("retrain")["query_id"].nunique()
        assert per_retrain.max() <= 4
        assert len(list((cell / "retrains" / "qld").glob("*.npy"))) == outcomes["retrain"].nunique()


def test_the_fine_tuned_models_retrains_replay_its_recipe_from_the_base_checkpoint(evaluation):
    for difficulty in ("easy", "hard"):
        cell = evaluation / f"difficulty~{difficulty}" / "seed~0" / "finetuned"
        recipe = json.loads((cell / "model" / "retrain_recipe.json").read_text())
        assert recipe["epochs"] == 1 and recipe["seed"] == 0  # finetune.max_epochs 1: the full fine-tune's epochs
        if difficulty == "hard":  # not in finetune.retrains.difficulties: both measures skipped, no retrain run
            assert pd.read_parquet(cell / "lds_outcomes.parquet").empty and pd.read_parquet(cell / "qld.parquet").empty
            assert not list(cell.glob("retrains/*/*.npy"))
            continue
        outcomes = pd.read_parquet(cell / "lds_outcomes.parquet")
        assert outcomes["subset"].nunique() == 3 and outcomes["log_prob"].std() > 0
        assert len(list((cell / "retrains" / "lds").glob("*.npy"))) == 3
        qld = pd.read_parquet(cell / "qld_outcomes.parquet")
        assert qld["query_id"].nunique() == 2
        assert len(list((cell / "retrains" / "qld").glob("*.npy"))) == qld["retrain"].nunique()


def test_verdict_names_the_measured_winners(evaluation):
    table = pd.read_parquet(evaluation / "evaluation.parquet")
    text = (evaluation / "verdict.md").read_text()
    lds = table[(table["measure"] == "lds") & (table["variant"] == "all") & (table["difficulty"] == "hard")]
    best = lds.sort_values(["value", "estimator"], ascending=[False, True]).iloc[0]
    assert f"**{best['estimator']}** is best with {best['value']:.3f}" in text or "tie for best" in text
    assert "## Difficulty: easy" in text and "## Difficulty: hard" in text
    assert "Were the planted facts learned (tiny model)?" in text
    assert "Gradient methods against lexical matching" in text and "QLD" in text
    assert "<b>" in (evaluation / "verdict.html").read_text()


def test_evaluation_figures_and_tables(evaluation):
    captions = json.loads((evaluation / "captions.json").read_text())
    assert set(captions) == {"ihvp_accuracy", "lds", "fact_tracing", "qld"}
    for name in captions:
        assert (evaluation / f"{name}.png").stat().st_size > 10_000
        assert len(pd.read_parquet(evaluation / f"{name}.parquet")) > 0
    cell = evaluation / "difficulty~easy" / "seed~0" / "tiny"
    ihvp = pd.read_parquet(cell / "ihvp.parquet")
    assert set(ihvp["fisher"]) == {"true", "empirical"} and set(ihvp["damping"]) == {0.1, 1.0}
    assert {"ekfac_cg", "ekfac_astra"} <= set(ihvp["estimator"])
    steps = pd.read_parquet(evaluation / "ihvp_steps.parquet")
    assert set(steps["preconditioner"]) == {"ekfac", "none", "astra"} and steps["steps"].max() >= 10
    assert steps[steps["preconditioner"] == "astra"]["steps"].max() == 20
    assert (evaluation / "ihvp_steps.png").stat().st_size > 10_000
    subsets = pd.read_parquet(evaluation / "ihvp_subsets.parquet")
    assert set(subsets["difficulty"]) == set(steps["difficulty"]) == {"easy", "hard"}  # every cell in the figures
    assert (subsets.groupby("difficulty")["n_sequences"].nunique() == 2).all()  # half and all of the set
    assert (subsets["steps"] == 10).all()
    assert (evaluation / "ihvp_subsets.png").stat().st_size > 10_000
    for model, scored in (("tiny", True), ("finetuned", False)):  # evaluation.scoring.cg_models, astra_models: [tiny]
        estimators = set(pd.read_parquet(cell.parent / model / "scores.parquet")["estimator"])
        assert ("ekfac_cg" in estimators) == ("ekfac_astra" in estimators) == scored and "ekfac" in estimators
    outcomes = pd.read_parquet(cell / "lds_outcomes.parquet")
    subsets = pd.read_parquet(cell / "lds_subsets.parquet")
    assert outcomes["subset"].nunique() == 5 and (subsets.groupby("subset").size() == 10).all()  # half of 20
    assert outcomes["log_prob"].std() > 0  # retraining on different halves changes the outcome


def test_report_collects_the_evaluation(evaluation):
    tmp = evaluation.parents[2]
    report = tmp / "evaluation_report.html"
    snakemake("evaluate", "--report", report, "--configfile", tmp / "config_evaluation.yaml", "--directory", tmp)
    html = report.read_text(errors="ignore")
    assert all(name in html for name in ("ihvp_accuracy.png", "lds.png", "fact_tracing.png", "qld.png", "verdict.html"))
