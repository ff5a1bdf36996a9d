"""Small statistics helpers shared by the analyses, the evaluation, the probes and the sweeps (numpy/scipy only)."""

from __future__ import annotations

import numpy as np
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
