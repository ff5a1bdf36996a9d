"""The verdict: Markdown written only from the evaluation table, per difficulty and measure.

For each difficulty: were the facts learned (query accuracy per variant), the winner and runner-up
of every headline measure and whether their intervals separate, where the gradient methods stand
against the lexical ones, and where the measures disagree about the winner.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..engine.estimators import ESTIMATORS
from .measures import DIFFERENCE, LEXICAL, MEASURE_WORDS, REFERENCE, describe, winners

GROUND_TRUTH = ("lds", "qld", "mrr")  # with recall_at_<k>: the measures the tally and disagreements use
LEARNED = 0.5  # original-query accuracy below which a model's counterfactual measures are flagged
ORDER = {"spearman": 0, "relative_error": 1, "lds": 2, "qld": 3, "mrr": 5}


def _gradient(estimator: str) -> bool:
    row = ESTIMATORS.get(estimator)
    return row is not None and (row.scope == "scoring" or row.curvature is not None)  # ekfac_matched too


def _headline(table: pd.DataFrame, headline_damping: float) -> pd.DataFrame:
    scored = table[~table["measure"].isin(["accuracy", "qld_raw"]) & ~table["measure"].str.startswith(DIFFERENCE)]
    ihvp = scored["measure"].isin(["spearman", "relative_error"])
    return scored[
        (ihvp & scored["variant"].str.endswith(f"damping~{headline_damping:g}"))
        | (~ihvp & (scored["variant"] == "all"))
    ]


def _stand(group: pd.DataFrame) -> str | None:
    """One sentence: the best gradient method against the best lexical baseline on one measure."""
    gradient = group[group["estimator"].map(_gradient)].sort_values("value", ascending=False)
    lexical = group[group["estimator"].isin(LEXICAL)].sort_values("value", ascending=False)
    if gradient.empty or lexical.empty:
        return None
    g, lx = gradient.iloc[0], lexical.iloc[0]
    if g["ci_low"] > lx["ci_high"]:
        how = "ahead, intervals separated"
    elif lx["ci_low"] > g["ci_high"]:
        how = "behind, intervals separated"
    else:
        how = "level within the intervals" if np.isfinite(g["ci_low"]) else "compared without intervals"
    return f"{g['estimator']} {g['value']:.3f} vs {lx['estimator']} {lx['value']:.3f} ({how})"


def _learned(table: pd.DataFrame, difficulty: str) -> list[str]:
    rows = table[(table["measure"] == "accuracy") & (table["difficulty"] == difficulty)]
    lines = []
    for model, group in rows.groupby("model", sort=True):
        parts = ", ".join(f"{r['variant']} {r['value']:.0%}" for _, r in group.iterrows())
        lines.append(f"Were the planted facts learned ({model} model)? Queries answered correctly: {parts}.")
        original = group[group["variant"] == "original"]["value"]
        if len(original) and original.iloc[0] < LEARNED:
            lines.append(
                f"Caution: the {model} model answers fewer than {LEARNED:.0%} of the original-wording queries, so "
                "its LDS and QLD measure how data shape answers it did not learn; read them as weak evidence."
            )
    return lines


def verdict(table: pd.DataFrame, headline_damping: float) -> str:
    """Markdown verdict from the table (`measures.TABLE_COLUMNS`), one section per difficulty."""
    lines = ["# Verdict: does influence work here?", ""]
    headline = _headline(table, headline_damping)
    for difficulty in sorted(table["difficulty"].unique(), key=lambda d: (d != "easy", d)):
        lines += [f"## Difficulty: {difficulty}", ""]
        lines += _learned(table, difficulty) + [""]
        part = headline[headline["difficulty"] == difficulty]
        candidates = part[~part["estimator"].isin([REFERENCE, "random"])]
        found = winners(candidates)
        found = found.iloc[np.argsort([ORDER.get(m, 4) for m in found["measure"]], kind="stable")]
        lines += [describe(w) for _, w in found.iterrows()]
        for _, ref in part[part["estimator"] == REFERENCE].iterrows():
            lines.append(
                f"- Reference, not an estimator: the exact inverse of each layer's Fisher block reaches "
                f"{ref['value']:.3f} on the {MEASURE_WORDS[ref['measure']]} ({ref['variant'].replace('_', ' ')})."
            )
        truth = candidates[
            candidates["measure"].isin(GROUND_TRUTH) | candidates["measure"].str.startswith("recall_at_")
        ]
        stands = [
            f"{measure.replace('recall_at_', 'recall@')} ({model}): {sentence}"
            for (model, measure), group in truth.groupby(["model", "measure"], sort=True)
            if (sentence := _stand(group))
        ]
        if stands:
            lines += ["", "Gradient methods against lexical matching (best of each): " + "; ".join(stands) + "."]
        ground = found[found["measure"].isin(GROUND_TRUTH) | found["measure"].str.startswith("recall_at_")]
        for model, group in ground.groupby("model", sort=True):
            bests = {m: b for m, b in zip(group["measure"], group["best"])}
            named = ", ".join(f"{m.replace('recall_at_', 'recall@')}: {b}" for m, b in bests.items())
            common = set.intersection(*(set(b.split(" = ")) for b in bests.values())) if bests else set()
            if not common:
                lines.append(f"The measures disagree on the {model} model ({named}).")
            elif bests:
                lines.append(f"The measures agree on the {model} model ({named}).")
        tally = ground["best"].str.split(" = ").explode().value_counts()
        if len(tally):
            lines.append(
                "Wins on the ground-truth measures (LDS, QLD, recall, MRR; ties count for each): "
                + ", ".join(f"{e} {n}" for e, n in tally.items())
                + "."
            )
        scored = table[(table["difficulty"] == difficulty) & table["measure"].str.startswith("recall_at_")]
        per_variant = winners(scored[scored["variant"] != "all"])
        for model, group in per_variant.groupby("model"):
            best = ", ".join(f"{w['variant']}: {w['best']} ({w['value']:.2f})" for _, w in group.iterrows())
            lines.append(f"Best recall per query variant on the {model} model: {best}.")
        lines += _differences(table, difficulty)
        lines.append("")
    return "\n".join(lines) + "\n"


def _differences(table: pd.DataFrame, difficulty: str) -> list[str]:
    """One line per paired difference (all query variants): its mean, interval over facts, and what it says."""
    rows = table[
        (table["difficulty"] == difficulty) & table["measure"].str.startswith(DIFFERENCE) & (table["variant"] == "all")
    ]
    lines = []
    for _, row in rows.iterrows():
        low, high = row["ci_low"], row["ci_high"]
        said = "interval includes 0" if not (low > 0 or high < 0) else ("above 0" if low > 0 else "below 0")
        measure = row["measure"][len(DIFFERENCE) :].replace("recall_at_", "recall@")
        lines.append(
            f"- Paired, {row['model']}, {measure}: {row['estimator']} = {row['value']:.3f} "
            f"[{low:.3f}, {high:.3f}] (n {int(row['n'])}; {said})."
        )
    return ["", "Paired differences (per query, bootstrap over facts):", *lines] if lines else []


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
