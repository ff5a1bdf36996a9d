"""Small statistics helpers shared by the analyses, the evaluation, the probes and the sweeps (numpy/scipy only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ, NaN (without scipy's warning) when either side is constant or too short."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def t_interval(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) Student-t interval of the finite values; the interval is NaN for n < 2."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(values.mean())
    if n < 2 or values.std() == 0:
        return mean, (mean if n > 1 else np.nan), (mean if n > 1 else np.nan), n
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half, n


# The one ranking rule of every table (scores.parquet's influence_rank, the analyses' top-k, the sweep's
# top-n, the sample's TF-IDF ranks): score descending, ties broken by seq_id ascending, ranks 1, 2, ...
def ranked(table: pd.DataFrame, score: str = "influence", by: str = "query_id") -> pd.DataFrame:
    """Rows sorted by `by`, then `score` descending, then seq_id; with `rank` (1 = largest) within `by`."""
    ordered = table.sort_values([by, score, "seq_id"], ascending=[True, False, True], ignore_index=True)
    return ordered.assign(rank=ordered.groupby(by).cumcount() + 1)


def top_k(table: pd.DataFrame, k: int, score: str = "influence") -> dict[str, list]:
    """{query_id: seq_ids of its k highest-scoring sequences, best first} under the ranking rule."""
    best = ranked(table[["query_id", "seq_id", score]], score)
    return best[best["rank"] <= k].groupby("query_id", sort=False)["seq_id"].agg(list).to_dict()


def cluster_bootstrap(
    values, clusters, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite values with a percentile bootstrap interval that resamples
    whole clusters (e.g. facts: queries about one fact are not independent), not single values.

    The statistic is the mean over all values of the resampled clusters; with one cluster the
    interval is NaN (there is nothing to resample).
    """
    values, clusters = np.asarray(values, float), np.asarray(clusters)
    finite = np.isfinite(values)
    values, clusters = values[finite], clusters[finite]
    n = len(values)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    labels, index = np.unique(clusters, return_inverse=True)
    sums = np.bincount(index, weights=values)  # (C,)
    counts = np.bincount(index).astype(float)  # (C,)
    mean = float(values.mean())
    if len(labels) < 2:
        return mean, np.nan, np.nan, n
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(labels), size=(n_boot, len(labels)))  # (B, C) resampled clusters
    means = sums[draws].sum(1) / counts[draws].sum(1)  # (B,)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(low), float(high), n


def bootstrap(statistic, n_items: int, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(indices)` over `n_items` resampled with replacement
    (e.g. the mean LDS over queries, recomputed on resampled retraining subsets)."""
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(n_items, size=n_items)) for _ in range(n_boot)], float)
    draws = draws[np.isfinite(draws)]
    if len(draws) < 2:
        return np.nan, np.nan
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def median_interval(values, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float, int]:
    """(median, low, high, n) of the finite values with a percentile bootstrap interval of the median."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan, 0
    low, high = bootstrap(lambda i: float(np.median(values[i])), len(values), level, n_boot, seed)
    return float(np.median(values)), low, high, len(values)
