"""Sweep points and directory names (influence.run.settings), which the workflow builds every path from."""

from influence.run.settings import index_candidates, setting_names, sweep_points


def _config(grid=False, **sweep):
    return {
        "model": {"layers_name": "mlp"},
        "tfidf": {"top_k": 25},
        "scoring": {
            "estimator": "ekfac",
            "damping": {"mode": "relative", "value": 0.1},
            "query_rank": 8,
            "candidates": "tfidf",
        },
        "sweep": {"layers": {}, "tfidf_top_k": [], "estimator": [], "damping": [], "query_rank": [], "grid": grid}
        | sweep,
    }


def test_names_hold_only_the_parameters_that_change_each_artefact():
    point = {"layers": "mlp", "top_k": 25, "estimator": "kfac", "damping": 0.5, "rank": None}
    names = setting_names(point, "absolute")
    assert names == {
        "queries": "layers~mlp_estimator~kfac_damping~absolute-0.5_rank~full",
        "scores": "layers~mlp_estimator~kfac_damping~absolute-0.5_rank~full_topk~25",
        "sample": "layers~mlp_damping~absolute-0.5",
    }


def test_one_at_a_time_sweep_starts_with_the_base_and_drops_repeats():
    points = sweep_points(_config(estimator=["kfac", "ekfac"], damping=[0.1, 1.0], layers={"attn": "attn"}))
    assert points[0] == {"layers": "mlp", "top_k": 25, "estimator": "ekfac", "damping": 0.1, "rank": 8}
    changed = [{k for k in p if p[k] != points[0][k]} for p in points[1:]]
    assert changed == [{"layers"}, {"estimator"}, {"damping"}]  # the base's own values are not repeated


def test_grid_sweep_is_the_product_without_duplicates():
    points = sweep_points(_config(grid=True, estimator=["kfac"], damping=[1.0], query_rank=[8, None]))
    assert len(points) == 2 * 2 * 2  # estimator × damping × rank (8 is the base's and counted once)
    assert len({tuple(p.values()) for p in points}) == len(points)


def test_index_candidates_name_the_scores_and_merge_tfidf_k_points():
    config = _config(tfidf_top_k=[10, 40])
    config["scoring"]["candidates"] = "index"
    config["index"] = {"k": 16, "dim": None, "kind": "gaussian", "seed": 0, "dtype": "float16", "max_sequences": 1024}
    config["index"].update(top_n=40, whiten=False)
    assert index_candidates(config) == "index~k~16_dim~none_gaussian_seed~0_float16_n~1024_top~40"
    config["index"]["whiten"] = True  # a whitened index is another index (it belongs to the factor fit)
    part = index_candidates(config)
    assert part == "index~k~16_dim~none_gaussian_whitened_seed~0_float16_n~1024_top~40"
    assert setting_names(sweep_points(config)[0], "relative", part)["scores"].endswith(part)
    assert len(sweep_points(config)) == 1  # the TF-IDF k changes nothing when the index gives the candidates
