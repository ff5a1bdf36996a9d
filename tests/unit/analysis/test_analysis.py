"""Analysis tables and figures on synthetic score tables (no model, no workflow)."""

import numpy as np
import pandas as pd
import pytest
from influence.analysis import figures
from influence.analysis import tables as analysis
from influence.engine import names

LAYERS = ["model.layers.1.mlp.down_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"]
TAGS = {
    "paris_en": {"group": "paris", "lang": "en", "order": "original"},
    "paris_fr": {"group": "paris", "lang": "fr", "order": "original"},
    "paris_de": {"group": "paris", "lang": "de", "order": "original"},
    "paris_flipped": {"group": "paris", "lang": "en", "order": "flipped"},
    "rome_en": {"group": "rome", "lang": "en", "order": "original"},
    "rome_es": {"group": "rome", "lang": "es", "order": "original"},
}


def make_scores(queries=tuple(TAGS), n_seq: int = 40, seed: int = 0) -> pd.DataFrame:
    """Every query × candidate with heavy-tailed per-layer influences that sum to `influence`."""
    rng = np.random.default_rng(seed)
    n = len(queries) * n_seq
    per_layer = rng.standard_t(3, size=(n, len(LAYERS)))
    table = pd.DataFrame(
        {"query_id": np.repeat(queries, n_seq), "seq_id": [f"s{i}" for i in range(n_seq)] * len(queries)}
    )
    table["influence"] = per_layer.sum(axis=1)
    for j, name in enumerate(LAYERS):
        table[names.LAYER_PREFIX + name] = per_layer[:, j]
    return table


def test_power_law_recovers_known_exponent():
    rng = np.random.default_rng(1)
    x = rng.pareto(1.5, 5000) + 1.0  # classic Pareto, x_min = 1, density exponent α = 2.5
    noise = -rng.exponential(size=500)  # opponents must be ignored by the fit
    for fit in (
        analysis.power_law_tail(np.concatenate([x, noise]), x_min=1.0),
        analysis.power_law_tail(x, tail_fraction=0.3),
        analysis.power_law_tail(x, tail_fraction=0.3, n_boot=200),
    ):
        assert fit["ci_low"] < 2.5 < fit["ci_high"]
        assert fit["ci_high"] - fit["ci_low"] < 0.3
        assert fit["rank_exponent"] == pytest.approx(1 / (fit["exponent"] - 1))
    assert analysis.power_law_tail(x, x_min=1.0)["n_tail"] == 5000
    steeper = analysis.power_law_tail(rng.pareto(2.5, 5000) + 1.0, x_min=1.0)  # α = 3.5
    assert not steeper["ci_low"] < 2.5 < steeper["ci_high"]


def test_sorted_influences_descend_per_query():
    table = analysis.sorted_influences(make_scores())
    for _, group in table.groupby("query_id"):
        assert list(group["rank"]) == list(range(1, len(group) + 1))
        assert np.all(np.diff(group["influence"].to_numpy()) <= 0)


def test_top_share_bounded_monotone_and_complete():
    scores = make_scores()
    shares = analysis.top_share(scores, ks=(1, 5, 10, 40, 100))
    assert shares["share"].between(0, 1).all()
    assert (shares.groupby("query_id")["share"].diff().dropna() >= 0).all()
    positive = scores.assign(influence=scores["influence"].abs() + 0.1)
    full = analysis.top_share(positive, ks=(40, 100))
    assert np.allclose(full["share"], 1.0)
    one = analysis.top_share(
        pd.DataFrame({"query_id": "q", "seq_id": list("abc"), "influence": [3.0, 1.0, -5.0]}), ks=(1,)
    )
    assert one["share"].item() == pytest.approx(0.75)


def test_max_influence_normalised_per_completion_token():
    scores = make_scores()
    table = analysis.max_influence_table(scores, {f"s{i}": 10 for i in range(40)}, {q: 2 for q in TAGS})
    expected = scores.groupby("query_id")["influence"].max()
    assert np.allclose(table.set_index("query_id")["influence"], expected.loc[table["query_id"]])
    assert np.allclose(table["per_completion_token"], table["influence"] / 2)
    assert np.allclose(table["per_token_pair"], table["influence"] / 20)


def test_layer_shares_sum_to_one_in_depth_order():
    shares = analysis.layer_shares(make_scores(), top_n=5)
    assert np.allclose(shares.groupby("query_id")["share"].sum(), 1.0)
    assert (shares["share"] >= 0).all()
    order = list(dict.fromkeys(shares["layer"]))
    assert order == ["model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    positive = analysis.layer_shares(make_scores(), top_n=5, mode="positive")
    assert np.allclose(positive.groupby("query_id")["share"].sum(), 1.0)


def test_depth_order_and_block_index():
    names = ["lm_head", "transformer.h.10.mlp.c_fc", "transformer.h.2.mlp.c_proj", "transformer.wte"]
    assert analysis.depth_order(names) == [
        "transformer.wte",
        "transformer.h.2.mlp.c_proj",
        "transformer.h.10.mlp.c_fc",
        "lm_head",
    ]
    assert analysis.block_index("model.layers.3.mlp.down_proj") == 3
    assert analysis.block_index("lm_head") is None


def test_cross_lingual_identical_translation_is_one():
    scores = make_scores()
    english = scores[scores["query_id"] == "paris_en"]
    scores = pd.concat([scores[scores["query_id"] != "paris_fr"], english.assign(query_id="paris_fr")])
    table = analysis.cross_lingual(scores, TAGS, k=5).set_index("query_id")
    assert set(table.index) == {"paris_fr", "paris_de", "rome_es"}  # flipped and English queries are no rows
    assert table.loc["paris_fr", "relative_influence"] == pytest.approx(1.0)
    assert table.loc["paris_fr", "topk_overlap"] == 1.0
    assert table.loc["paris_de", "relative_influence"] != pytest.approx(1.0)
    assert table.loc["paris_de", "reference_id"] == "paris_en"


def test_cross_lingual_hand_computed():
    scores = pd.DataFrame(
        {
            "query_id": ["en"] * 3 + ["fr"] * 3,
            "seq_id": ["a", "b", "c"] * 2,
            "influence": [4.0, 2.0, 1.0, 1.0, -1.0, 5.0],
        }
    )
    tags = {"en": {"group": "g", "lang": "en"}, "fr": {"group": "g", "lang": "fr"}}
    row = analysis.cross_lingual(scores, tags, k=2).iloc[0]
    assert row["relative_influence"] == pytest.approx((1.0 - 1.0) / (4.0 + 2.0))
    assert row["topk_overlap"] == pytest.approx(0.5)  # fr top-2 is {c, a}


def test_flip_comparison_pairs_flipped_with_original():
    scores = make_scores()
    original = scores[scores["query_id"] == "paris_en"]
    scores = pd.concat(
        [
            scores[scores["query_id"] != "paris_flipped"],
            original.assign(query_id="paris_flipped", influence=original["influence"] * 0.5),
        ]
    )
    table = analysis.flip_comparison(scores, TAGS, k=10)
    assert list(table["query_id"]) == ["paris_flipped"]
    assert table["relative_influence"].item() == pytest.approx(0.5)
    assert table["topk_overlap"].item() == 1.0


@pytest.mark.parametrize(
    "tags,translations,flips",
    [
        ({}, "`group`", "`group`"),  # no tags at all
        ({"paris_en": {"lang": "en"}, "paris_fr": {"lang": "fr"}}, "`group`", "`group`"),  # lang without group
        ({"paris_en": {"group": "paris"}, "paris_fr": {"group": "paris"}}, "`lang`", "`order: flipped`"),
        (  # one language only
            {"paris_en": {"group": "paris", "lang": "en"}, "rome_en": {"group": "rome", "lang": "en"}},
            "translation",
            "`order: flipped`",
        ),
        ({"paris_flipped": {"group": "paris", "order": "flipped"}}, "`order: original`", "one `order: original`"),
    ],
)
def test_empty_pair_tables_say_which_tag_is_missing(tags, translations, flips, tmp_path):
    from influence.plotting import plot_skipped

    tags = {query_id: tags.get(query_id, {}) for query_id in TAGS}
    scores = make_scores()
    assert analysis.cross_lingual(scores, tags).empty and analysis.flip_comparison(scores, tags).empty
    assert translations in analysis.why_no_translations(tags)
    assert flips in analysis.why_no_flips(tags)
    assert analysis.why_no_translations(TAGS) == ""
    caption = plot_skipped(tmp_path / "skipped.png", "Cross-lingual transfer", analysis.why_no_translations(tags))
    assert caption.startswith("Skipped: ") and (tmp_path / "skipped.png").stat().st_size > 1000


def test_rank_agreement_identical_and_perturbed():
    scores = make_scores()
    same = analysis.rank_agreement(scores, scores.sample(frac=1, random_state=0))
    assert np.allclose(same["spearman"], 1.0) and np.allclose(same["relative_l2"], 0.0)
    noisy = scores.assign(influence=scores["influence"] + np.random.default_rng(3).normal(size=len(scores)))
    worse = analysis.rank_agreement(scores, noisy)
    assert (worse["spearman"] < 1).all() and (worse["relative_l2"] > 0).all()
    with pytest.raises(ValueError):
        analysis.rank_agreement(scores, scores.iloc[1:])


def test_estimator_correlations_pairs():
    scores = make_scores()
    table = analysis.estimator_correlations(
        {
            "ekfac": scores,
            "scaled": scores.assign(influence=scores["influence"] * 3),
            "negated": scores.assign(influence=-scores["influence"]),
        }
    )
    assert len(table) == 3
    rho = table.set_index(["estimator_a", "estimator_b"])
    assert rho.loc[("ekfac", "scaled"), "spearman_mean"] == pytest.approx(1.0)
    assert rho.loc[("ekfac", "negated"), "spearman_min"] == pytest.approx(-1.0)
    assert (table["n_queries"] == len(TAGS)).all()


def test_tfidf_recall_hand_computed_and_full_corpus():
    scores = pd.DataFrame({"query_id": "q", "seq_id": list("abcdef"), "influence": [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]})
    ranks = pd.DataFrame({"query_id": "q", "seq_id": list("fedcba"), "tfidf_rank": [1, 2, 3, 4, 5, 6]})
    recall = analysis.tfidf_recall(scores, ranks, true_k=2, k_primes=[1, 4, 5, 6]).set_index("k_prime")["recall"]
    assert recall.to_dict() == {1: 0.0, 4: 0.0, 5: 0.5, 6: 1.0}  # true top-2 {a, b} sit at TF-IDF ranks 6, 5
    partial = analysis.tfidf_recall(scores, ranks.iloc[:5], true_k=2, k_primes=[6])  # 'a' never retrieved
    assert partial["recall"].item() == 0.5


@pytest.fixture(scope="module")
def tables():
    scores = make_scores()
    by_rank = {
        r: scores.assign(influence=scores["influence"] + np.random.default_rng(r).normal(size=len(scores)) / r)
        for r in (1, 4, 16)
    }
    ranks = scores[["query_id", "seq_id"]].assign(tfidf_rank=scores.groupby("query_id").cumcount() + 1)
    sorted_table = analysis.sorted_influences(scores)
    return {
        "sparsity": (figures.plot_sparsity, sorted_table),
        "top_share": (figures.plot_top_share, analysis.top_share(scores)),
        "layers": (figures.plot_layer_heatmap, analysis.layer_shares(scores)),
        "cross_lingual": (figures.plot_cross_lingual, analysis.cross_lingual(scores, TAGS)),
        "flip": (figures.plot_flip, analysis.flip_comparison(scores, TAGS)),
        "rank_agreement": (figures.plot_rank_agreement, analysis.rank_agreement_sweep(scores, by_rank)),
        "estimators": (
            figures.plot_estimator_correlations,
            analysis.estimator_correlations({"ekfac": scores, **{f"r{r}": t for r, t in by_rank.items()}}),
        ),
        "tfidf_recall": (figures.plot_tfidf_recall, analysis.tfidf_recall(scores, ranks, 10, [1, 5, 10, 20, 40])),
    }


@pytest.mark.parametrize(
    "name", ["sparsity", "top_share", "layers", "cross_lingual", "flip", "rank_agreement", "estimators", "tfidf_recall"]
)
def test_figure_writes_png_and_caption(tables, tmp_path, name):
    plot, table = tables[name]
    table.to_parquet(tmp_path / f"{name}.parquet")  # every figure's table must be storable
    path = tmp_path / "sub" / f"{name}.png"
    caption = plot(table, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert isinstance(caption, str) and len(caption) > 100 and "\n" not in caption


def test_one_ranking_rule_breaks_ties_by_seq_id_everywhere():
    from influence.analysis.sweep import compare_to_base
    from influence.stats import ranked, top_k

    # b and c tie, and so do x and y: the rule is score descending, then seq_id ascending
    table = pd.DataFrame(
        {
            "query_id": ["q"] * 4 + ["r"] * 2,
            "seq_id": ["c", "b", "a", "d", "y", "x"],
            "influence": [2.0, 2.0, 3.0, 1.0, 0.5, 0.5],
        }
    )
    order = ranked(table)
    assert order["seq_id"].tolist() == ["a", "b", "c", "d", "x", "y"]
    assert order["rank"].tolist() == [1, 2, 3, 4, 1, 2]
    assert top_k(table, 2) == {"q": ["a", "b"], "r": ["x", "y"]}
    assert top_k(table.iloc[::-1], 2) == top_k(table, 2)  # row order never matters
    # the sweep's top-n overlap uses the same rule: a table equal to its base but for row order keeps all
    points = {s: {"layers": "l", "top_k": 1, "estimator": "ekfac", "damping": 0.1, "rank": s} for s in ("a", "b")}
    overlap = compare_to_base({"a": table, "b": table.iloc[::-1]}, points, "a", 1)
    assert (overlap["top_overlap"] == 1.0).all()
