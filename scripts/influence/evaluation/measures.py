"""Ground-truth measures of attribution quality, their intervals, and the verdict written from them.

- LDS (linear datamodeling score; Park et al. 2023, TRAK; kronfluence): for each query, Spearman's ρ
  over M training subsets between the predicted effect Σ_{z∈S} score(q, z) and the measured
  log p(completion | prompt) of the model retrained on S; reported as the mean over queries.
- recall@k and MRR of a query's planted documents in its score ranking (fact tracing).
- QLD (`qld`): the query loss rise after retraining without a method's top-k documents.
Pure numpy/pandas/scipy: no torch, no snakemake.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import cluster_bootstrap, spearman, t_interval

KEYS = ["difficulty", "model", "measure", "estimator", "variant"]
TABLE_COLUMNS = [*KEYS, "value", "ci_low", "ci_high", "n", "interval"]
LEXICAL = ("tfidf", "bm25")


def lds(scores: np.ndarray, masks: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per-query LDS (Q,): scores (Q, N), subset masks (M, N) of 0/1, actual outcomes (M, Q)."""
    scores, masks, actual = np.asarray(scores, float), np.asarray(masks, float), np.asarray(actual, float)
    if masks.shape[1] != scores.shape[1] or actual.shape != (masks.shape[0], scores.shape[0]):
        raise ValueError(f"LDS shapes disagree: scores {scores.shape}, masks {masks.shape}, actual {actual.shape}.")
    predicted = masks @ scores.T  # (M, Q)
    return np.array([spearman(predicted[:, q], actual[:, q]) for q in range(scores.shape[0])])


def ranks_of_relevant(scores: np.ndarray, relevant: np.ndarray) -> list[np.ndarray]:
    """Per query, the 1-based ranks of its relevant documents when sorted by descending score.

    Ties are counted pessimistically (a relevant document ranks after every document with an equal
    score), so a constant scorer earns no credit.
    """
    out = []
    for row, rel in zip(np.asarray(scores, float), np.asarray(relevant, bool)):
        ranks = []
        for i in np.flatnonzero(rel):
            tied = row == row[i]
            earlier_relevant_ties = int((tied & rel)[: i + 1].sum())  # 1 for the first tied relevant document
            ranks.append(int((row > row[i]).sum()) + int((tied & ~rel).sum()) + earlier_relevant_ties)
        out.append(np.array(ranks, dtype=int))
    return out


def recall_at_k(scores: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """(Q,) fraction of each query's relevant documents among its k highest scores."""
    return np.array([float((r <= k).mean()) if len(r) else np.nan for r in ranks_of_relevant(scores, relevant)])


def mrr(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(Q,) reciprocal rank of each query's best-ranked relevant document."""
    return np.array([1.0 / r.min() if len(r) else np.nan for r in ranks_of_relevant(scores, relevant)])


DIFFERENCE = "difference:"  # measure prefix of the paired differences (tables.paired_rows)


def bounds(measure: str) -> tuple[float, float]:
    """The range a measure's values can take: intervals are clipped to it."""
    if measure.startswith(DIFFERENCE):  # a paired difference of two estimators' values
        low, high = bounds(measure[len(DIFFERENCE) :])
        return low - high, high - low
    if measure in ("lds", "spearman"):
        return -1.0, 1.0
    if measure in ("mrr", "accuracy") or measure.startswith("recall_at_"):
        return 0.0, 1.0
    if measure.startswith("qld"):
        return -np.inf, np.inf
    return 0.0, np.inf


def summarise(rows: list[dict]) -> pd.DataFrame:
    """Table rows {difficulty, model, measure, estimator, variant, values[, clusters][, ci]} → one row each with
    its mean and a 95% interval (clipped to the measure's range, e.g. [0, 1] for recall): a bootstrap over
    `clusters` (facts per seed) when given, the given `ci` (e.g. a bootstrap over LDS subsets), else a
    Student-t interval over the values. `interval` names which."""
    out = []
    for row in rows:
        if row.get("clusters") is not None:
            mean, low, high, n = cluster_bootstrap(row["values"], row["clusters"])
            kind = "bootstrap over facts"
        else:
            mean, low, high, n = t_interval(row["values"])
            kind = "t over queries"
        if row.get("ci") is not None:
            (low, high), kind = row["ci"], "bootstrap over subsets"
        lowest, highest = bounds(row["measure"])
        low, high = (low if np.isnan(low) else max(low, lowest)), (high if np.isnan(high) else min(high, highest))
        keys = {k: row.get(k, "easy" if k == "difficulty" else None) for k in KEYS}
        out.append({**keys, "value": mean, "ci_low": low, "ci_high": high, "n": n, "interval": kind})
    return pd.DataFrame(out, columns=TABLE_COLUMNS)


WINNER_COLUMNS = [
    "difficulty",
    "model",
    "measure",
    "variant",
    "best",
    "value",
    "ci_low",
    "ci_high",
    "runner_up",
    "runner_up_value",
    "separated",
]


def winners(table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, measure, variant): the best estimator(s) (ties joined by ' = '), the runner-up (the best
    of the rest), and whether their intervals are separated."""
    rows = []
    for key, group in table.dropna(subset=["value"]).groupby(["difficulty", "model", "measure", "variant"], sort=True):
        lower_better = key[2] == "relative_error"
        ranked = group.sort_values(["value", "estimator"], ascending=[lower_better, True])
        top = ranked["value"].iloc[0]
        tied, rest = ranked[ranked["value"] == top], ranked[ranked["value"] != top]
        best = tied.iloc[0]
        second = rest.iloc[0] if len(rest) else None
        separated = second is not None and (
            best["ci_low"] > second["ci_high"] if not lower_better else best["ci_high"] < second["ci_low"]
        )
        rows.append(
            {
                "difficulty": key[0],
                "model": key[1],
                "measure": key[2],
                "variant": key[3],
                "best": " = ".join(tied["estimator"]),
                "value": top,
                "ci_low": best["ci_low"],
                "ci_high": best["ci_high"],
                "runner_up": None if second is None else second["estimator"],
                "runner_up_value": np.nan if second is None else second["value"],
                "separated": bool(separated),
            }
        )
    return pd.DataFrame(rows, columns=WINNER_COLUMNS)


NEAR_ZERO_ERROR = 0.9  # relative error of a prediction no better than all zeros (which scores exactly 1)
REFERENCE = "block_exact"  # the exact block-diagonal inverse: a diagnostic, never a winner
MEASURE_WORDS = {
    "lds": "LDS (Spearman ρ between predicted and measured effect of retraining on random subsets)",
    "qld": "QLD (query loss rise after retraining without the method's top-k, beyond removing k random documents)",
    "mrr": "MRR of the planted documents",
    "spearman": "rank correlation with the exact influence",
    "relative_error": "relative error against the exact influence",
}


def describe(w: pd.Series) -> str:
    what = MEASURE_WORDS.get(w["measure"], w["measure"].replace("recall_at_", "recall@") + " of the planted documents")
    scope = f"{w['difficulty']}, {w['model']} model" + (
        "" if w["variant"] == "all" else f", {w['variant'].replace('_', ' ')}"
    )
    interval = f"95% interval {w['ci_low']:.3f} to {w['ci_high']:.3f}" if np.isfinite(w["ci_low"]) else "no interval"
    if w["runner_up"] is None:
        return f"- {what} ({scope}): {w['best']} all score {w['value']:.3f} ({interval})."
    if w["separated"]:
        confidence = "clearly ahead: the intervals do not overlap"
    else:
        confidence = "not clearly ahead: the intervals overlap, so this ranking is uncertain"
    verb = "tie for best" if " = " in w["best"] else "is best"
    line = (
        f"- {what} ({scope}): **{w['best']}** {verb} with {w['value']:.3f} ({interval}), "
        f"then {w['runner_up']} with {w['runner_up_value']:.3f}; {confidence}."
    )
    if w["measure"] == "relative_error" and w["value"] >= NEAR_ZERO_ERROR:
        line += (
            " A relative error near 1 is what predicting all zeros scores, so even the best estimator "
            "misses the scale of the exact influence here: read the rank correlation instead."
        )
    return line
