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
