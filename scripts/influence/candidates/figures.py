"""Figures of the gradient index: TF-IDF recall over the whole indexed corpus, and projection accuracy."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..plotting import figure_axes, plot_recall_curve
from .gradient_index import ACCURACY_SKETCHES


def plot_index_tfidf_recall(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """`gradient_index.tfidf_recall_of_index`: recall of the index's top-n within TF-IDF's top k, against k."""
    wide = table.pivot(index="k", columns="query_id", values="recall").sort_index()
    n = int(table["n"].max()) if len(table) else 0
    n_indexed = int(table["n_indexed"].max()) if len(table) else 0
    plot_recall_curve(
        wide,
        path,
        xlabel=f"k (TF-IDF candidates kept of {n_indexed} indexed sequences)",
        ylabel=f"recall of the index's top-{n} (fraction)",
        title="TF-IDF prefilter against the gradient index",
    )
    half = wide.index[(wide.mean(axis=1) >= 0.5).to_numpy()]
    reach = f"mean recall reaches 0.5 at k = {half[0]}" if len(half) else "mean recall stays below 0.5"
    return (
        f"For each query, the fraction of the gradient index's top-{n} sequences (projected influence over all "
        f"{n_indexed} indexed sequences) that TF-IDF ranks within its top k of the same sequences (grey: single "
        f"queries; blue: mean); {reach}."
    )


SKETCHES = {  # gradient_index.ACCURACY_SKETCHES: legend name, colour
    "whitened": ("random, whitened (index.whiten: true)", "#1f77b4"),
    "plain": ("random, plain (index.whiten: false)", "#ff7f0e"),
    "eigen": ("top-k eigenvectors (index.kind: eigen)", "#2ca02c"),
}


def plot_projection_accuracy(table: pd.DataFrame, path: str | os.PathLike, n_sample: int) -> str:
    """`gradient_index.projection_accuracy`: Spearman ρ, top-10 overlap and recall of the exact top 10 in the
    projected top-n with exact EK-FAC scores, against k, per sketch: the mean over projection seeds and queries,
    and the spread of the per-seed means (the random sketches' own noise)."""
    n = int(table["n"].max()) if len(table) else 0
    panels = (("spearman", "Spearman ρ"), ("top_overlap", "top-10 overlap"), ("recall_at_n", f"top-10 in top-{n}"))
    sketches = [s for s in SKETCHES if s in set(table["sketch"])]
    random = [name for name, (_, seeded) in ACCURACY_SKETCHES.items() if seeded]
    seeds = table.loc[table["sketch"].isin(random), "seed"].nunique()  # draws per random sketch
    with figure_axes(path, ncols=3, size=(12.0, 3.6)) as (_fig, axes):
        for ax, (column, label) in zip(axes, panels):
            for sketch in sketches:
                name, colour = SKETCHES[sketch]
                per_seed = table[table["sketch"] == sketch].groupby(["k", "seed"])[column].mean()  # over queries
                stats = per_seed.groupby("k").agg(["mean", "min", "max"])
                ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.15)
                drawn = sketch in random and seeds > 1  # several random draws: a band
                label_of = f"{name}: mean (band: seeds)" if drawn else name
                ax.plot(stats.index, stats["mean"], "o-", color=colour, lw=2, label=label_of)
            baseline = table.loc[table["sketch"] == "tfidf", column]
            if len(baseline):
                ax.axhline(baseline.mean(), color="0.3", ls=":", lw=1.5, label="TF-IDF prefilter (no index): mean")
            ks = sorted(table.loc[table["sketch"] != "tfidf", "k"].unique())
            ax.set(xscale="log", ylim=(min(0, float(table[column].min())), 1.03), xlabel="k (k × k per layer)")
            ax.set(ylabel=f"{label} with exact EK-FAC", title=label)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
        axes[0].axhline(0.9, color="0.5", ls="--", lw=0.8)
        axes[0].legend(loc="lower right", fontsize=7)
    means = table.groupby(["sketch", "k"])["spearman"].mean()
    reach = []
    for sketch in sketches:
        rho = means.loc[sketch]
        good = rho.index[(rho >= 0.9).to_numpy()]
        reach.append(
            f"{sketch}: mean ρ reaches 0.9 at k = {good[0]}" if len(good) else
            f"{sketch}: mean ρ stays below 0.9 (best {np.nanmax(rho):.2f} at k = {rho.idxmax()})"
        )  # fmt: skip
    return (
        f"Influence through the gradient index (both sides of every layer's gradient projected to k × k; blue: "
        f"random, whitened by the factors' Kronecker eigenbasis; orange: random, plain; green: each factor's top-k "
        f"eigenvectors) against exact full-rank EK-FAC influence, over the sample analysis's {n_sample} sequences: "
        f"Spearman ρ (left), the share of the exact top-10 in the projected top-10 (middle) and in the projected "
        f"top-{n} (right: what scoring.candidates: index rescores), per k; lines are means over the queries (and "
        f"{seeds} projection seed(s) for the random sketches), bands the range of the per-seed means; dotted: "
        f"the TF-IDF prefilter's own ranking of the same sequences; {'; '.join(reach)}."
    )
