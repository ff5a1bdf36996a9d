# Helpers of the gradient index's rules (rules/index.smk): shards per layer set, then one directory per query setting.


INDEX_ROOT = f"{MRUN}/index/{index_name()}"
INDEX_SHARDS = list(range(config["index"]["n_shards"]))
INDEX_QUERY = f"{INDEX_ROOT}/{{setting}}"  # setting: a query setting (layers, estimator, damping, rank)
INDEX_FIGURES = ["index_tfidf_recall"]
ACCURACY_FIGURES = ["projection_accuracy"]


def index_projection() -> dict:
    return {key: config["index"][key] for key in ("k", "dim", "seed", "kind", "whiten")}


def index_eigen(wildcards) -> dict:
    """A whitened or `eigen` index is built and queried with the eigenbasis of its layer set's factors."""
    if not ProjectionSpec(**index_projection()).needs_eigen:
        return {}
    return {"eigen": f"{factors_dir(wildcards)}/{FACTOR_FILES[names.EIGEN_INPUT]}"}


def index_shards(wildcards) -> list[str]:
    """Every shard of the index over the query setting's layer set."""
    layers = PARAMS_OF[wildcards.setting]["layers"]
    root = INDEX_ROOT.format(lm=wildcards.lm) if MODELS else INDEX_ROOT
    return expand(f"{root}/layers~{layers}/shard_{{shard}}.safetensors", shard=INDEX_SHARDS)


def index_query_outputs() -> dict:
    """The full score matrix only when index.score_matrix asks for it."""
    return {"scores": f"{INDEX_QUERY}/scores.parquet"} if config["index"]["score_matrix"] else {}


def index_targets() -> dict:
    """The run's own query setting against the index, its TF-IDF comparison and the projection accuracy."""
    point = POINTS[0]
    names_of = setting_names(point)
    return {
        "top": per_model(f"{INDEX_ROOT}/{names_of['queries']}/top.parquet"),
        "figures": per_model(f"{INDEX_ROOT}/{names_of['queries']}/index_tfidf_recall.png"),
        "accuracy": per_model(f"{INDEX_ROOT}/{names_of['sample']}/projection_accuracy.png"),
    }
