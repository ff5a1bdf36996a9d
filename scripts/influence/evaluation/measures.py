"""Ground-truth measures of attribution quality, their intervals, and the verdict written from them.

- LDS (linear datamodeling score; Park et al. 2023, TRAK; kronfluence): for each query, Spearman's ρ
  over M training subsets between the predicted effect Σ_{z∈S} score(q, z) and the measured
  log p(completion | prompt) of the model retrained on S; reported as the mean over queries.
- recall@k and MRR of a query's planted documents in its score ranking (fact tracing).
Pure numpy/pandas/scipy: no torch, no snakemake.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..stats import spearman, t_interval

TABLE_COLUMNS = ["model", "measure", "estimator", "variant", "value", "ci_low", "ci_high", "n"]


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


def bounds(measure: str) -> tuple[float, float]:
    """The range a measure's values can take: intervals are clipped to it."""
    if measure in ("lds", "spearman"):
        return -1.0, 1.0
    if measure in ("mrr", "accuracy") or measure.startswith("recall_at_"):
        return 0.0, 1.0
    return 0.0, np.inf


def summarise(rows: list[dict]) -> pd.DataFrame:
    """Table rows {model, measure, estimator, variant, values} → one row each with a t interval (clipped to the
    measure's range, e.g. [0, 1] for recall)."""
    out = []
    for row in rows:
        mean, low, high, n = t_interval(row["values"])
        lowest, highest = bounds(row["measure"])
        low, high = (low if np.isnan(low) else max(low, lowest)), (high if np.isnan(high) else min(high, highest))
        out.append({**{k: row[k] for k in TABLE_COLUMNS[:4]}, "value": mean, "ci_low": low, "ci_high": high, "n": n})
    return pd.DataFrame(out, columns=TABLE_COLUMNS)


WINNER_COLUMNS = [
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
    for key, group in table.dropna(subset=["value"]).groupby(["model", "measure", "variant"], sort=True):
        ranked = group.sort_values(["value", "estimator"], ascending=[key[1] == "relative_error", True])
        top = ranked["value"].iloc[0]
        tied, rest = ranked[ranked["value"] == top], ranked[ranked["value"] != top]
        best = tied.iloc[0]
        second = rest.iloc[0] if len(rest) else None
        separated = second is not None and (
            best["ci_low"] > second["ci_high"] if key[1] != "relative_error" else best["ci_high"] < second["ci_low"]
        )
        rows.append(
            {
                "model": key[0],
                "measure": key[1],
                "variant": key[2],
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
    "lds": "LDS (Spearman ρ between predicted and measured effect of retraining on random halves)",
    "mrr": "MRR of the planted documents",
    "spearman": "rank correlation with the exact influence",
    "relative_error": "relative error against the exact influence",
}


def _describe(w: pd.Series) -> str:
    what = MEASURE_WORDS.get(w["measure"], w["measure"].replace("recall_at_", "recall@") + " of the planted documents")
    scope = f"{w['model']} model" + ("" if w["variant"] == "all" else f", {w['variant'].replace('_', ' ')}")
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


def verdict(table: pd.DataFrame, headline_damping: float, accuracy: Mapping[str, float] | None = None) -> str:
    """Markdown verdict written only from the table: facts learned, then the winner of every headline measure.

    Headline rows: iHVP accuracy at `headline_damping`, LDS, and fact tracing over all queries; the best
    estimator per query variant follows in one sentence per model.
    """
    lines = ["# Verdict: does influence work here?", ""]
    if accuracy:
        learned = "; ".join(f"{m} model {a:.0%}" for m, a in accuracy.items())
        lines += [f"Were the planted facts learned? Original-wording queries answered correctly: {learned}.", ""]
    scored = table[table["measure"] != "accuracy"]
    ihvp = scored["measure"].isin(["spearman", "relative_error"])
    headline = scored[
        (ihvp & scored["variant"].str.endswith(f"damping~{headline_damping:g}"))
        | (~ihvp & (scored["variant"] == "all"))
    ]
    order = {"spearman": 0, "relative_error": 1, "lds": 2, "mrr": 4}
    found = winners(headline[headline["estimator"] != REFERENCE])
    found = found.iloc[np.argsort([order.get(m, 3) for m in found["measure"]], kind="stable")]
    lines += [_describe(w) for _, w in found.iterrows()]
    for _, ref in headline[headline["estimator"] == REFERENCE].iterrows():
        lines.append(
            f"- Reference, not an estimator: the exact inverse of each layer's Fisher block reaches "
            f"{ref['value']:.3f} on the {MEASURE_WORDS[ref['measure']]} ({ref['variant'].replace('_', ' ')}); "
            "what separates it from the exact influence is cross-layer curvature, what separates EK-FAC from it "
            "is the Kronecker eigenbasis."
        )
    tally = (
        found[~found["measure"].isin(["spearman", "relative_error"])]["best"].str.split(" = ").explode().value_counts()
    )
    if len(tally):
        lines += [
            "",
            "Wins (ties count for each tied estimator) on the ground-truth measures (LDS, recall, MRR): "
            + ", ".join(f"{e} {n}" for e, n in tally.items())
            + ".",
        ]
    per_variant = winners(scored[scored["measure"].str.startswith("recall_at_") & (scored["variant"] != "all")])
    for model, group in per_variant.groupby("model"):
        best = ", ".join(f"{w['variant']}: {w['best']} ({w['value']:.2f})" for _, w in group.iterrows())
        lines.append(f"Best recall per query variant on the {model} model: {best}.")
    return "\n".join(lines) + "\n"


def markdown_to_html(text: str) -> str:
    """The verdict's small Markdown subset (# headings, - items, **bold**) as a standalone HTML page."""
    import html
    import re

    body, in_list = [], False
    for line in text.splitlines():
        escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(line))
        if line.startswith("- ") != in_list:
            body.append("<ul>" if not in_list else "</ul>")
            in_list = not in_list
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{escaped.lstrip('#').strip()}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{escaped[2:]}</li>")
        elif line.strip():
            body.append(f"<p>{escaped}</p>")
    body.append("</ul>" if in_list else "")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Verdict</title></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
