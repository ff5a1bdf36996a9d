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
