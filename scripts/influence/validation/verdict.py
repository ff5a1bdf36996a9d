"""The validation's verdict (Markdown, and the same sentences as an HTML section of the report) and its figure,
written only from `validation.parquet` and the noise floor.

Power first: when no method's proponents move log p beyond the random k-sets (every interval reaches 0), the
verdict says "no power" and names the recipe settings to raise, instead of naming a winner.
"""

from __future__ import annotations

import html
import os

import numpy as np
import pandas as pd

from ..engine.estimators import ESTIMATORS
from ..plotting import figure_axes
from .plan import RANDOM

WORDS = {
    "proponents": "rise of log p after training on the method's top k, beyond random k-sets (nats)",
    "opponents": "rise of log p after training on the method's bottom k, beyond random k-sets (nats)",
    "lds": "further-training LDS (Spearman over random halves of the pool)",
}


def label(method: str) -> str:
    return ESTIMATORS[method].label if method in ESTIMATORS else method


def _fmt(row) -> str:
    interval = f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if np.isfinite(row["ci_low"]) else ""
    return f"{row['value']:.3f}{interval}"


def sentences(table: pd.DataFrame, run_method: str, recipe: dict, noise: pd.DataFrame | None = None) -> list[str]:
    """The verdict's sentences, most important first; `noise` (noise.parquet) adds the LDS subsets' signal to noise."""
    out = []
    plain = table[table["versus"] == ""]
    pro = plain[plain["measure"] == "proponents"].set_index("method")
    opp = plain[plain["measure"] == "opponents"].set_index("method")
    lds = plain[plain["measure"] == "lds"].set_index("method")
    moved = pro[(pro["ci_low"] > 0) & (pro.index != RANDOM)]
    lowered = opp[opp["ci_high"] < 0]
    floor = pro["control_sd"].iloc[0] if len(pro) else np.nan
    seed_sd = pro["seed_sd"].iloc[0] if len(pro) else np.nan
    if moved.empty and lowered.empty:
        out.append(
            "**No power**: no method's top sequences move log p(completion) beyond what random k-sets of the pool "
            f"move it (one random k-set: ±{floor:.3g} nats; another seed: ±{seed_sd:.3g}); the proponent test names "
            "no winner. Raise validate.recipe.lr or epochs (now "
            f"{recipe['optimizer']}, lr {recipe['lr']:g}, {recipe['epochs']} epoch(s)), or validate.top_k."
        )
    else:
        ranked = pro[pro.index != RANDOM].sort_values("value", ascending=False)
        best = ranked.index[0]
        text = (
            f"Training on **{label(best)}**'s top sequences raises log p(completion) most: {_fmt(ranked.iloc[0])} nats"
        )
        if len(ranked) > 1:
            second = ranked.index[1]
            apart = ranked.iloc[0]["ci_low"] > ranked.iloc[1]["ci_high"]
            text += f", ahead of {label(second)} ({_fmt(ranked.iloc[1])}); " + (
                "the intervals separate." if apart else "the intervals overlap: no clear winner."
            )
        out.append(text + f" (noise floor: one random k-set ±{floor:.3g}, another seed ±{seed_sd:.3g}.)")
    if run_method in pro.index:
        diffs = table[(table["measure"] == "proponents_difference") & (table["method"] == run_method)]
        diffs = diffs.set_index("versus")
        for other in ("bm25", "tfidf", RANDOM):
            if other in diffs.index and not diffs.loc[other, "ci_low"] > 0:
                out.append(
                    f"**Warning**: {label(run_method)}'s top sequences are no better than {label(other)}'s here "
                    f"(difference {_fmt(diffs.loc[other])} nats, interval over queries reaching 0)."
                )
    if len(opp):
        lowest = opp.sort_values("value").iloc[0]
        out.append(
            f"Opponents: training on {label(opp.sort_values('value').index[0])}'s most negative sequences changes log p "
            f"by {_fmt(lowest)} nats"
            + (" (lowered beyond the controls)." if lowest["ci_high"] < 0 else " (not beyond the controls).")
        )
    if len(lds):
        best_lds = lds[lds.index != RANDOM].sort_values("value", ascending=False)
        spread = lds["seed_sd"].iloc[0]
        has_power = (best_lds["ci_low"] > 0).any()
        text = (
            f"Further-training LDS: {label(best_lds.index[0])} {_fmt(best_lds.iloc[0])}, random {_fmt(lds.loc[RANDOM])}"
            if RANDOM in lds.index
            else f"Further-training LDS: {label(best_lds.index[0])} {_fmt(best_lds.iloc[0])}"
        )
        if not has_power:
            text += f"; no method's LDS interval lies above 0 (no power; one subset under another seed ±{spread:.3g})."
        else:
            text += "."
        if noise is not None and "lds_spread" in noise and np.isfinite(noise["lds_seed_sd"]).any():
            text += (
                f" The measured log p varies by {noise['lds_spread'].mean():.2f} nats across subsets and by "
                f"{noise['lds_seed_sd'].mean():.2f} for one subset under another seed (means over queries): "
                + ("the subsets' effects stand above the training noise." if noise["lds_spread"].mean()
                   > 2 * noise["lds_seed_sd"].mean() else "much of what LDS ranks is training noise; raise "
                   "validate.n_subsets or validate.recipe.epochs for a firmer LDS.")
            )  # fmt: skip
        out.append(text)
    return out


def markdown(table: pd.DataFrame, run_method: str, recipe: dict, facts: dict, noise=None) -> str:
    """verdict.md: the sentences, then the table of means with intervals."""
    lines = ["# Does attribution work on this model and corpus?", ""]
    lines += [f"- {s}" for s in sentences(table, run_method, recipe, noise)]
    lines += ["", f"Measured on {facts['queries']} queries, {facts['pool']} pool sequences, {facts['trainings']} "
              f"further-trainings ({recipe['optimizer']}, lr {recipe['lr']:g}, {recipe['epochs']} epoch(s), batch "
              f"{recipe['batch_size']}, seed {recipe['seed']}); 95% bootstrap intervals over queries.", ""]  # fmt: skip
    plain = table[table["versus"] == ""]
    wide = plain.assign(cell=plain.apply(_fmt, axis=1)).pivot(index="method", columns="measure", values="cell")
    wide = wide.reindex(index=list(dict.fromkeys(plain["method"])), columns=[m for m in WORDS if m in wide.columns])
    lines += ["| method | " + " | ".join(wide.columns) + " |", "|---" * (len(wide.columns) + 1) + "|"]
    lines += [f"| {label(m)} | " + " | ".join(str(v) for v in row) + " |" for m, row in wide.fillna("—").iterrows()]
    return "\n".join(lines) + "\n"


def section_html(table: pd.DataFrame, run_method: str, recipe: dict, noise=None) -> str:
    """The report's section: the same sentences, bold kept."""
    items = []
    for text in sentences(table, run_method, recipe, noise):
        escaped = html.escape(text)
        parts = escaped.split("**")
        items.append("".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts)))
    return (
        '<h2 id="validation">Does it work on this model? (snakemake validate)</h2><ul>'
        + "".join(f"<li>{item}</li>" for item in items)
        + "</ul>"
    )


def plot(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Proponent and opponent effects (left) and further-training LDS (right) per method with their intervals;
    the band is ± one random k-set's spread. Returns the caption."""
    plain = table[table["versus"] == ""]
    methods = list(dict.fromkeys(plain["method"]))
    y = np.arange(len(methods))
    with figure_axes(path, ncols=2, size=(8.0, 0.45 * len(methods) + 1.6)) as (_fig, (left, right)):
        panels = (("proponents", left, "o", -0.12), ("opponents", left, "s", 0.12), ("lds", right, "o", 0.0))
        for measure, ax, marker, shift in panels:
            rows = plain[plain["measure"] == measure].set_index("method").reindex(methods)
            low, high = rows["value"] - rows["ci_low"], rows["ci_high"] - rows["value"]
            ax.errorbar(rows["value"], y + shift, xerr=[low.fillna(0), high.fillna(0)], fmt=marker, capsize=3,
                        label=measure, mfc="none" if measure == "opponents" else None)  # fmt: skip
        floor = plain.loc[plain["measure"] == "proponents", "control_sd"]
        if len(floor) and np.isfinite(floor.iloc[0]):
            left.axvspan(-floor.iloc[0], floor.iloc[0], color="0.9", label="± one random k-set")
        for ax in (left, right):
            ax.axvline(0, color="0.5", lw=0.8)
            ax.set_yticks(y, [label(m) for m in methods])
            ax.invert_yaxis()
        left.set(xlabel="Δ log p(completion) beyond random k-sets (nats)", title="training on the top / bottom k")
        right.set(xlabel="Spearman ρ (predicted vs measured)", title="further-training LDS")
        right.set_yticklabels([])
        left.legend(loc="lower right")
    return (
        "Left: the rise of log p(completion | prompt) after further training the run's checkpoint on each method's "
        "top k sequences for a query (circles) or its bottom k (squares, influence estimators only), minus the mean "
        "rise after training on random k-sets of the pool; the grey band is one random k-set's standard deviation. "
        "Right: further-training LDS, per query Spearman's ρ over random subsets of the pool between the summed "
        "scores and the measured log p. Means over queries with 95% bootstrap intervals over queries; the numbers "
        "are in validation.parquet."
    )
