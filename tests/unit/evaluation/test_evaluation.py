"""Evaluation measures on constructed cases whose answer is known, and the verdict written from numbers."""

import numpy as np
import pandas as pd
import pytest
from influence.evaluation.measures import TABLE_COLUMNS, lds, mrr, recall_at_k, summarise
from influence.evaluation.verdict import markdown_to_html, verdict
from influence.stats import t_interval


def test_perfect_predictor_has_lds_one():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 40))  # (Q, N)
    masks = (rng.random((30, 40)) < 0.5).astype(float)  # (M, N)
    actual = masks @ scores.T + 3.0  # the outcome is exactly the sum over the subset (plus a constant)
    np.testing.assert_allclose(lds(scores, masks, actual), 1.0)
    np.testing.assert_allclose(lds(-scores, masks, actual), -1.0)  # a sign error shows up as -1


def test_random_predictor_has_lds_near_zero():
    rng = np.random.default_rng(1)
    masks = (rng.random((50, 60)) < 0.5).astype(float)
    actual = masks @ rng.normal(size=(200, 60)).T  # (M, Q) from a hidden truth
    values = lds(rng.normal(size=(200, 60)), masks, actual)  # scores unrelated to it
    assert abs(values.mean()) < 0.05 and values.std() > 0.05


def test_lds_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        lds(np.zeros((2, 5)), np.zeros((4, 6)), np.zeros((4, 2)))


def test_perfect_ranking_has_recall_and_mrr_one():
    rng = np.random.default_rng(2)
    relevant = np.zeros((4, 50), bool)
    for q in range(4):
        relevant[q, rng.choice(50, 3, replace=False)] = True
    scores = relevant + 0.01 * rng.random((4, 50))
    np.testing.assert_allclose(recall_at_k(scores, relevant, 10), 1.0)
    np.testing.assert_allclose(mrr(scores, relevant), 1.0)
    np.testing.assert_allclose(recall_at_k(-scores, relevant, 10), 0.0)  # reversed: planted last


def test_random_ranking_recall_is_k_over_n():
    rng = np.random.default_rng(3)
    relevant = np.zeros((2000, 100), bool)
    relevant[:, :3] = True
    recall = recall_at_k(rng.random((2000, 100)), relevant, 10)
    assert recall.mean() == pytest.approx(10 / 100, abs=0.01)


def test_ranks_by_hand_and_ties_are_pessimistic():
    scores = np.array([[0.9, 0.5, 0.7, 0.1]])
    relevant = np.array([[False, True, False, False]])
    assert mrr(scores, relevant)[0] == pytest.approx(1 / 3)
    assert recall_at_k(scores, relevant, 2)[0] == 0 and recall_at_k(scores, relevant, 3)[0] == 1
    constant = np.zeros((1, 4))  # a scorer that cannot tell documents apart earns nothing
    assert recall_at_k(constant, relevant, 3)[0] == 0 and mrr(constant, relevant)[0] == pytest.approx(1 / 4)


def test_t_interval_matches_scipy_by_hand():
    mean, low, high, n = t_interval([1.0, 2.0, 3.0, 4.0, np.nan])
    assert (mean, n) == (2.5, 4)
    assert high - mean == pytest.approx(3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-5)
    assert np.isnan(t_interval([1.0])[1])


def _table(lds_a, lds_b, spread):
    rows = [
        {
            "model": "tiny",
            "measure": "lds",
            "estimator": e,
            "variant": "all",
            "values": np.array([v - spread, v, v + spread]),
        }
        for e, v in (("ekfac", lds_a), ("bm25", lds_b))
    ]
    return summarise(rows)


def test_verdict_follows_the_numbers():
    table = _table(0.6, 0.1, 0.01)
    assert list(table.columns) == TABLE_COLUMNS
    text = verdict(table, 0.1)
    assert "**ekfac** is best with 0.600" in text and "clearly ahead" in text
    flipped = verdict(_table(0.1, 0.6, 0.5), 0.1)
    assert "**bm25** is best" in flipped and "uncertain" in flipped
    html = markdown_to_html(text)
    assert "<b>ekfac</b>" in html and "<li>" in html and html.count("<ul>") == html.count("</ul>")


def test_verdict_reports_accuracy_and_headline_damping_only():
    rows = [
        {
            "model": "tiny",
            "measure": "spearman",
            "estimator": e,
            "variant": f"true_fisher/damping~{d:g}",
            "values": np.array([v, v + 0.01]),
        }
        for e, d, v in (
            ("ekfac", 0.1, 0.9),
            ("kfac", 0.1, 0.5),
            ("kfac", 1.0, 0.99),
            ("ekfac", 1.0, 0.2),
            ("block_exact", 0.1, 0.97),
        )
    ]
    rows.append(
        {
            "model": "tiny",
            "measure": "accuracy",
            "estimator": "model",
            "variant": "original",
            "values": np.array([1.0, 1, 1, 0]),
        }
    )
    text = verdict(summarise(rows), 0.1)
    assert "original 75%" in text and "**ekfac** is best with 0.905" in text and "0.995" not in text
    assert "**block_exact**" not in text and "Reference, not an estimator" in text and "0.975" in text
    assert isinstance(summarise(rows), pd.DataFrame)
    assert "Caution" not in text  # 75% learned
    rows[-1]["values"] = np.array([1.0, 0, 0, 0])
    assert "Caution: the tiny model answers fewer than 50%" in verdict(summarise(rows), 0.1)


def test_verdict_warns_when_the_best_relative_error_is_no_better_than_predicting_zero():
    rows = [
        {
            "model": "tiny",
            "measure": "relative_error",
            "estimator": e,
            "variant": "true_fisher/damping~0.1",
            "values": np.array([v, v + 0.01]),
        }
        for e, v in (("lissa", 0.99), ("ekfac", 21.5))
    ]
    assert "what predicting all zeros scores" in verdict(summarise(rows), 0.1)
    rows[0]["values"] = np.array([0.2, 0.21])
    assert "predicting all zeros" not in verdict(summarise(rows), 0.1)


def test_intervals_are_clipped_to_the_measures_range():
    rows = [
        {"model": "m", "measure": "recall_at_10", "estimator": "e", "variant": "all", "values": np.array([1, 1, 0.5])},
        {"model": "m", "measure": "relative_error", "estimator": "e", "variant": "all", "values": np.array([0.1, 5])},
    ]
    table = summarise(rows)
    assert table["ci_high"].iloc[0] == 1.0 and table["ci_low"].iloc[1] == 0.0
    assert table["ci_high"].iloc[1] > 5


def test_tables_from_rule_outputs_give_known_answers():
    from influence.evaluation.attribution import scores_long
    from influence.evaluation.tables import lds_rows, tracing_rows

    documents = pd.DataFrame(
        {
            "seq_id": ["a", "b", "c", "d"],
            "fact_id": ["f1", "f1", "f2", "f2"],
            "role": ["planted", "distractor", "planted", "planted"],
        }
    )
    variants, facts = {"q1": "original", "q2": "flipped"}, {"q1": "f1", "q2": "f2"}
    oracle = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.9]])  # planted documents first
    scores = scores_long({"oracle": oracle, "reversed": -oracle}, list(variants), documents["seq_id"].tolist())
    table = summarise(tracing_rows(scores, documents, variants, facts, "tiny", k=1)).set_index(
        ["estimator", "measure", "variant"]
    )["value"]
    assert table[("oracle", "mrr", "all")] == 1.0 and table[("oracle", "recall_at_1", "flipped")] == 0.5
    assert table[("reversed", "recall_at_1", "all")] == 0.0
    rng = np.random.default_rng(5)
    masks = rng.random((8, 4)) < 0.5
    subsets = pd.DataFrame(
        [(m, documents["seq_id"][i]) for m in range(8) for i in np.flatnonzero(masks[m])], columns=["subset", "seq_id"]
    )
    outcomes = pd.DataFrame(
        [(m, q, float(masks[m] @ oracle[j])) for m in range(8) for j, q in enumerate(variants)],
        columns=["subset", "query_id", "log_prob"],
    )
    lds_table = summarise(lds_rows(scores, subsets, outcomes)).query("variant == 'all'").set_index("estimator")["value"]
    assert lds_table["oracle"] == pytest.approx(1.0) and lds_table["reversed"] == pytest.approx(-1.0)


def test_cluster_bootstrap_resamples_facts_not_queries():
    from influence.stats import bootstrap, cluster_bootstrap

    rng = np.random.default_rng(0)
    fact_effect = rng.normal(size=20)  # 20 facts, 4 queries each sharing their fact's effect
    values = np.repeat(fact_effect, 4) + 0.01 * rng.normal(size=80)
    clusters = np.repeat([f"0/f{i}" for i in range(20)], 4)
    mean, low, high, n = cluster_bootstrap(values, clusters, n_boot=4000)
    assert n == 80 and mean == pytest.approx(values.mean()) and low < mean < high
    _, t_low, t_high, _ = t_interval(values)
    # Treating the 80 queries as independent understates the spread about 2x (sqrt of 4 queries per fact).
    assert (high - low) > 1.6 * (t_high - t_low)
    se = fact_effect.std(ddof=1) / np.sqrt(20)
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert np.isnan(cluster_bootstrap([1.0, 2.0], ["a", "a"])[1])  # one fact: nothing to resample
    low, high = bootstrap(lambda i: values[i].mean(), 80, n_boot=500)
    assert low < values.mean() < high


def test_seeds_pool_as_documented():
    from influence.evaluation.tables import pool_seeds

    row = {"model": "tiny", "measure": "mrr", "estimator": "bm25", "variant": "all"}
    rows = [
        {**row, "values": np.array([1.0, 0.5]), "clusters": np.array(["0/f1", "0/f2"])},
        {**row, "values": np.array([0.0, 0.5]), "clusters": np.array(["1/f1", "1/f2"])},
    ]
    (pooled,) = pool_seeds(rows, "hard")
    assert pooled["difficulty"] == "hard" and list(pooled["values"]) == [1.0, 0.5, 0.0, 0.5]
    table = summarise([pooled])
    assert table["interval"].iloc[0] == "bootstrap over facts" and table["n"].iloc[0] == 4
    assert table["value"].iloc[0] == pytest.approx(0.5)


def test_verdict_per_difficulty_with_disagreements_and_gradient_against_lexical():
    def rows(difficulty, measure, values):
        return [
            {
                "difficulty": difficulty,
                "model": "tiny",
                "measure": measure,
                "estimator": e,
                "variant": "all",
                "values": np.array([v - 0.01, v, v + 0.01]),
            }
            for e, v in values.items()
        ]

    table = summarise(
        rows("easy", "recall_at_3", {"ekfac": 0.5, "bm25": 1.0})
        + rows("easy", "qld", {"ekfac": 0.4, "bm25": 0.3, "random": 0.9})  # random is a control, never a winner
        + rows("hard", "recall_at_3", {"ekfac": 0.6, "bm25": 0.55})
        + rows("hard", "qld", {"ekfac": 0.5, "bm25": 0.1})
    )
    text = verdict(table, 0.1)
    easy, hard = text.split("## Difficulty: hard")
    assert "## Difficulty: easy" in easy
    assert "**bm25** is best with 1.000" in easy and "**ekfac** is best with 0.400" in easy
    assert "The measures disagree on the tiny model" in easy and "**random**" not in text
    assert "ekfac 0.500 vs bm25 1.000 (behind, intervals separated)" in easy
    assert "The measures agree on the tiny model" in hard
    assert "ekfac 0.500 vs bm25 0.100 (ahead, intervals separated)" in hard


def test_vectorised_mean_spearman_equals_the_lds_mean():
    from influence.evaluation.tables import mean_spearman

    rng = np.random.default_rng(4)
    masks = (rng.random((12, 30)) < 0.5).astype(float)
    scores, actual = rng.normal(size=(5, 30)), rng.normal(size=(12, 5))
    actual[:, 2] = 1.0  # a constant query is left out, as lds() gives it NaN
    assert mean_spearman(masks @ scores.T, actual) == pytest.approx(np.nanmean(lds(scores, masks, actual)))


def test_paired_differences_align_queries_and_skip_what_cannot_be_paired():
    from influence.evaluation.measures import DIFFERENCE, summarise
    from influence.evaluation.tables import paired_rows

    def row(estimator, measure, values, clusters):
        base = {"difficulty": "hard", "model": "finetuned", "variant": "all"}
        return {
            **base,
            "measure": measure,
            "estimator": estimator,
            "values": np.array(values),
            "clusters": np.array(clusters),
        }

    rows = [
        row("ekfac", "lds", [0.5, 0.2, 0.1], ["0/a", "0/a", "0/b"]),
        row("bm25", "lds", [0.1, 0.3, 0.1], ["0/a", "0/a", "0/b"]),
        row("ekfac_astra", "qld", [2.0, 1.0], ["0/a", "0/b"]),
        row("ekfac", "qld", [0.5, 1.5], ["0/b", "0/a"]),  # another order: paired by fact
        row("ekfac_cosine", "mrr", [1.0], ["0/a"]),
        row("ekfac", "mrr", [1.0, 0.5], ["0/a", "0/b"]),  # other queries: not paired
    ]
    out = {(r["measure"], r["estimator"]): r for r in paired_rows(rows)}
    assert set(out) == {(DIFFERENCE + "lds", "ekfac − bm25"), (DIFFERENCE + "qld", "ekfac_astra − ekfac")}
    np.testing.assert_allclose(out[DIFFERENCE + "lds", "ekfac − bm25"]["values"], [0.4, -0.1, 0.0])
    np.testing.assert_allclose(out[DIFFERENCE + "qld", "ekfac_astra − ekfac"]["values"], [2.0 - 1.5, 1.0 - 0.5])
    table = summarise(list(out.values()))
    assert (
        table.loc[table["measure"] == DIFFERENCE + "lds", "ci_low"].item() >= -2
    )  # clipped to the range of a difference
