"""What `snakemake validate` trains on: the queries, the candidates every method ranks, the pool, the trainings.

Pure numpy/pandas. Every draw is seeded by `validate.seed`, so a rerun plans the same trainings and finds them in
the further-training cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine.estimators import BASELINES, ESTIMATORS, SCORING_ESTIMATORS
from ..evaluation.training import OPTIMIZERS
from ..inputs.queries import Query
from ..stats import ranked

RANDOM = "random"  # the control method: seeded random scores
# kinds of training: a method's top-k for a query, its bottom-k, a random k-set of the pool, a random subset of the
# pool (LDS), and the same k-set or subset trained again with the next recipe seed (the noise floor)
KINDS = ("proponents", "opponents", "control", "lds", "repeat")
PLAN_COLUMNS = ["kind", "method", "query_id", "index", "training_id"]
TRAINING_COLUMNS = ["training_id", "seed", "seq_id"]  # one row per trained sequence


def check_settings(settings: dict, run_estimator: str) -> None:
    """Stop on settings that cannot give a measurement, naming the `validate.*` key and what to do."""
    unknown = [e for e in settings["estimators"] if e not in SCORING_ESTIMATORS]
    if unknown:
        raise ValueError(
            f"validate.estimators: {unknown} are not scoring estimators; choose from {', '.join(SCORING_ESTIMATORS)}."
        )
    unknown = [b for b in settings["baselines"] if b not in BASELINES]
    if unknown:
        raise ValueError(f"validate.baselines: {unknown} are not baselines; choose from {', '.join(BASELINES)}.")
    if not 0 < settings["fraction"] < 1:
        raise ValueError(f"validate.fraction is {settings['fraction']}; it must lie strictly between 0 and 1.")
    recipe = settings["recipe"]
    if recipe["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"validate.recipe.optimizer {recipe['optimizer']!r}: choose one of {', '.join(OPTIMIZERS)}.")
    if not recipe["lr"] > 0:
        raise ValueError(f"validate.recipe.lr is {recipe['lr']}; it must be positive.")
    if run_estimator not in SCORING_ESTIMATORS:
        raise ValueError(f"scoring.estimator {run_estimator!r} is not a scoring estimator.")


def methods(settings: dict, run_estimator: str) -> list[str]:
    """The methods compared: the run's estimator first, the other estimators, the baselines, then `random`."""
    estimators = [run_estimator, *[e for e in settings["estimators"] if e != run_estimator]]
    return [*estimators, *settings["baselines"], RANDOM]


def signed(method: str) -> bool:
    """Whether a method's most negative scores name opponents (influence estimators) or merely dissimilar text."""
    return method in ESTIMATORS and ESTIMATORS[method].scope == "scoring"


def choose_queries(queries: list[Query], n: int | None, seed: int) -> list[Query]:
    """`n` of the queries, drawn with `seed` and kept in file order (all of them when n is None or too large)."""
    if n is None or n >= len(queries):
        return list(queries)
    chosen = np.sort(np.random.default_rng([seed, 0]).choice(len(queries), size=n, replace=False))
    return [queries[i] for i in chosen]


def candidate_set(run_candidates: pd.DataFrame, corpus_ids: Sequence[str], query_ids, n_random: int, seed: int):
    """(candidates every method ranks for every query, the random part): the run's candidates of the chosen queries
    (what `scoring.candidates` selected) and `n_random` corpus sequences drawn with `seed`, sorted by seq_id."""
    chosen = run_candidates[run_candidates["query_id"].isin(query_ids)]["seq_id"].astype(str)
    corpus_ids = np.asarray(corpus_ids, dtype=object)
    n_random = min(n_random, len(corpus_ids))
    random_ids = corpus_ids[np.random.default_rng([seed, 1]).choice(len(corpus_ids), size=n_random, replace=False)]
    candidates = sorted(set(chosen) | set(random_ids.tolist()))
    return candidates, sorted(random_ids.tolist())


def check_top_k(top_k: int, n_candidates: int) -> None:
    if not 1 <= top_k <= n_candidates // 2:
        raise ValueError(
            f"validate.top_k is {top_k} but the candidates number {n_candidates}: a method's top and bottom k must "
            f"be disjoint; lower validate.top_k or raise validate.n_random_candidates (or tfidf.top_k)."
        )


def extremes(scores: pd.DataFrame, k: int) -> pd.DataFrame:
    """Every method's top-k (proponents) and, for signed methods, bottom-k (opponents) per query, under the
    one ranking rule (`stats.ranked`: score descending, ties by seq_id): method, query_id, kind, seq_id, rank."""
    parts = []
    for method, table in scores.groupby("method", sort=False):
        best = ranked(table[["query_id", "seq_id", "score"]], "score")
        parts.append(best[best["rank"] <= k].assign(method=method, kind="proponents"))
        if signed(method):
            worst = ranked(table[["query_id", "seq_id"]].assign(score=-table["score"].to_numpy()), "score")
            parts.append(worst[worst["rank"] <= k].assign(method=method, kind="opponents"))
    return pd.concat(parts, ignore_index=True)[["method", "query_id", "kind", "seq_id", "rank"]]


def pool_table(chosen: pd.DataFrame, random_ids: Sequence[str]) -> pd.DataFrame:
    """The pool: every chosen sequence and the random candidates, with where each came from (seq_id, random,
    methods, queries: comma-separated `method:kind` and query ids; empty for a sequence only drawn at random)."""
    by_seq = chosen.assign(source=chosen["method"] + ":" + chosen["kind"]).groupby("seq_id")
    pool = pd.DataFrame({"seq_id": sorted(set(chosen["seq_id"]) | set(random_ids))})
    pool["random"] = pool["seq_id"].isin(set(random_ids))
    pool["methods"] = pool["seq_id"].map(by_seq["source"].agg(lambda s: ",".join(sorted(set(s))))).fillna("")
    pool["queries"] = pool["seq_id"].map(by_seq["query_id"].agg(lambda s: ",".join(sorted(set(s))))).fillna("")
    return pool


def plan_trainings(chosen: pd.DataFrame, pool: pd.DataFrame, settings: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(plan, trainings). plan: one row per measurement (kind, method, query_id, index, training_id; query_id empty
    for controls and LDS subsets, which every query is measured on). trainings: one row per distinct training
    (training_id, seed, seq_ids sorted): a k-set two methods share is trained once."""
    seed, k, recipe_seed = settings["seed"], settings["top_k"], settings["recipe"]["seed"]
    rng = np.random.default_rng([seed, 2])
    pool_ids = pool["seq_id"].to_numpy(dtype=object)
    n_keep = min(len(pool_ids) - 1, max(1, round(settings["fraction"] * len(pool_ids))))
    draws = {
        "control": [np.sort(rng.choice(pool_ids, size=k, replace=False)) for _ in range(settings["n_controls"])],
        "lds": [np.sort(rng.choice(pool_ids, size=n_keep, replace=False)) for _ in range(settings["n_subsets"])],
    }
    rows, trainings = [], {}

    def add(kind, method, query_id, index, seq_ids, training_seed):
        key = (tuple(sorted(map(str, seq_ids))), training_seed)
        trainings.setdefault(key, f"t{len(trainings):04d}")
        rows.append((kind, method, query_id, index, trainings[key]))

    for (method, query_id, kind), group in chosen.groupby(["method", "query_id", "kind"], sort=False):
        add(kind, method, query_id, 0, group["seq_id"], recipe_seed)
    for kind, sets in draws.items():
        for i, seq_ids in enumerate(sets):
            add(kind, "", "", i, seq_ids, recipe_seed)
    # the noise floor: every control k-set, and the first two LDS subsets, trained again with the next seed
    for i, seq_ids in enumerate(draws["control"]):
        add("repeat", "control", "", i, seq_ids, recipe_seed + 1)
    for i, seq_ids in enumerate(draws["lds"][:2]):
        add("repeat", "lds", "", i, seq_ids, recipe_seed + 1)
    plan = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    table = pd.DataFrame(
        [(tid, s, seq_id) for (ids, s), tid in trainings.items() for seq_id in ids], columns=TRAINING_COLUMNS
    ).sort_values(["training_id", "seq_id"], ignore_index=True)
    return plan, table


def part_of(trainings: pd.DataFrame, part: int, n_parts: int) -> pd.DataFrame:
    """The trainings of job `part` of `n_parts` (round robin over training ids: every job gets big and small ones)."""
    ids = sorted(trainings["training_id"].unique())[part::n_parts]
    return trainings[trainings["training_id"].isin(ids)]


def checkpoint_digest(model_dir: str | Path) -> str:
    """SHA-256 of a checkpoint's weight and config files: the further-training cache's key for the weights."""
    digest = hashlib.sha256()
    paths = sorted(p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".json", ".bin"))
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:20]
