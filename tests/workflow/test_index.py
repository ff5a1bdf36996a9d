"""The gradient index in the tiny run: candidates from the index rescored exactly, resumable shards,
new queries reuse the index."""

import os

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import IDENTICAL_SEQ, TINY_QUERIES, planned_jobs, snakemake, tiny_config

pytestmark = pytest.mark.workflow  # runs the real Snakemake workflow end to end

QUERIES = "layers~mlp_estimator~ekfac_damping~relative-0.1_rank~8"  # the tiny config's query setting
INDEX = "k~8_dim~none_eigen_seed~0_float16_n~1024"  # index.kind eigen, the default
INDEX_SETTING = f"{QUERIES}_index~{INDEX}_top~20"
TFIDF_SETTING = f"{QUERIES}_topk~25"


@pytest.fixture(scope="module")
def index_run(tiny_run):
    """The tiny run's factors and queries, with candidates from a 2-shard index of the whole tiny corpus."""
    tmp, _, results = tiny_run
    config = tiny_config(tmp, name="index", candidates="index")
    settings = yaml.safe_load(config.read_text())
    settings["index"] = {"k": 8, "n_shards": 2, "top_n": 20}
    config.write_text(yaml.safe_dump(settings))
    target = f"results/tiny/scores/{INDEX_SETTING}/top.parquet"
    snakemake("--cores", 2, "--configfile", config, "--directory", tmp, target)
    return tmp, config, results


def test_index_candidates_are_rescored_exactly(index_run):
    tmp, _, results = index_run
    index_top = pd.read_parquet(results / "index" / INDEX / QUERIES / "top.parquet")
    assert index_top.groupby("query_id").size().eq(20).all()
    first = index_top[index_top["influence_rank"] == 1].set_index("query_id")["seq_id"]
    assert first[TINY_QUERIES[0]["id"]] == IDENTICAL_SEQ, index_top.head()
    scores = pd.read_parquet(results / "scores" / INDEX_SETTING / "scores.parquet")
    top = pd.read_parquet(results / "scores" / INDEX_SETTING / "top.parquet")
    assert top[(top["query_id"] == TINY_QUERIES[0]["id"]) & (top["influence_rank"] == 1)]["seq_id"].item() == (
        IDENTICAL_SEQ
    )
    assert scores["tfidf_rank"].isna().all() and {"index_score", "index_rank"} <= set(scores.columns)
    # The same pairs scored from TF-IDF candidates by score_shard: the rescored influences are exact.
    tfidf = pd.read_parquet(results / "scores" / TFIDF_SETTING / "scores.parquet")
    common = scores.merge(tfidf, on=["query_id", "seq_id"], suffixes=("", "_tfidf"))
    assert len(common) >= 20
    scale = common["influence_tfidf"].abs().max()  # float32 sums over other batch compositions
    pd.testing.assert_series_equal(
        common["influence"], common["influence_tfidf"], check_names=False, rtol=1e-4, atol=1e-5 * scale
    )


def test_lost_index_shard_rebuilds_alone_and_new_queries_reuse_the_index(index_run):
    tmp, config, results = index_run
    target = f"results/tiny/index/{INDEX}/{QUERIES}/top.parquet"
    # A run killed while building shard 1: that shard and everything after it are missing.
    lost = [results / "index" / INDEX / "layers~mlp" / "shard_1.safetensors"]
    lost += [results / "index" / INDEX / QUERIES / f"{name}.parquet" for name in ("top", "candidates", "search")]
    backup = tmp / "lost"
    backup.mkdir(exist_ok=True)
    for i, path in enumerate(lost):
        os.replace(path, backup / str(i))  # keeps the mtime, so putting it back restores the run
    try:
        jobs = planned_jobs("--configfile", config, "--directory", tmp, target)
        assert jobs.get("build_index") == 1 and jobs.get("query_index") == 1, jobs
        assert not {"fit_covariance", "precondition_queries", "tokenize_corpus"} & set(jobs), jobs
    finally:
        for i, path in enumerate(lost):
            os.replace(backup / str(i), path)
    extra = {"id": "tallest_mountain", "prompt": "The tallest mountain is", "completion": " Everest", "tags": {}}
    queries = tmp / "queries_more.yaml"
    queries.write_text(yaml.safe_dump([*TINY_QUERIES, extra]))
    more = tmp / "config_more_queries.yaml"
    more.write_text(yaml.safe_dump({"queries": str(queries)}))
    scores = f"results/tiny/scores/{INDEX_SETTING}/top.parquet"
    jobs = planned_jobs("--configfile", config, more, "--directory", tmp, scores)
    assert jobs.get("precondition_queries") == 1 and jobs.get("query_index") == 1, jobs
    assert not {"build_index", "fit_covariance", "tokenize_corpus"} & set(jobs), jobs


def test_projection_accuracy_is_exact_once_k_covers_every_layer(index_run):
    """The accuracy rule against the sample analysis's exact EK-FAC scores, for the whitened and plain random
    sketches and the factors' top eigenvectors (beside TF-IDF's own ranking): at k = 64 every side of the tiny model (32 and 64 wide) is exact,
    so every sketch reproduces the exact ranking; at k = 2 none does."""
    tmp, config, results = index_run
    ks = tmp / "config_accuracy.yaml"
    ks.write_text(yaml.safe_dump({"index": {"accuracy_ks": [2, 64]}}))
    folder = f"results/tiny/index/{INDEX}/layers~mlp_damping~relative-0.1"
    snakemake("--cores", 2, "--configfile", config, ks, "--directory", tmp, f"{folder}/projection_accuracy.png")
    table = pd.read_parquet(tmp / folder / "projection_accuracy.parquet")
    baseline, table = table[table["sketch"] == "tfidf"], table[table["sketch"] != "tfidf"]
    assert len(baseline) == 2 and baseline["k"].eq(0).all() and baseline["spearman"].notna().all()  # TF-IDF's ranks
    assert set(table["sketch"]) == {"whitened", "plain", "eigen"} and set(table["k"]) == {2, 64}
    seeds = table.groupby("sketch")["seed"].agg(set)
    assert seeds["whitened"] == seeds["plain"] == {0, 1, 2} and seeds["eigen"] == {0}  # index.accuracy_seeds
    assert table.groupby(["k", "sketch", "seed"]).size().eq(2).all()  # the analysis's 2 queries
    exact = table[table["k"] == 64]
    assert (exact["spearman"] > 0.9999).all() and exact["top_overlap"].eq(1).all(), exact
    assert exact["recall_at_n"].eq(1).all() and exact["n"].eq(20).all()  # index.top_n of the fixture
    assert (table.loc[table["k"] == 2, "spearman"] < 0.99).all(), table


def test_changed_corpus_rebuilds_the_index(index_run):
    tmp, config, results = index_run
    tokens = results / "corpus" / "tokens.npy"
    kept, stat = tokens.read_bytes(), tokens.stat()
    changed = np.load(tokens)
    changed[0] += 1  # as if tokenize_corpus had rerun on an edited corpus
    np.save(tokens, changed)
    try:
        jobs = planned_jobs(
            "--configfile", config, "--directory", tmp, f"results/tiny/index/{INDEX}/{QUERIES}/top.parquet"
        )
    finally:
        tokens.write_bytes(kept)
        os.utime(tokens, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert jobs.get("build_index") == 2 and jobs.get("query_index") == 1, jobs
