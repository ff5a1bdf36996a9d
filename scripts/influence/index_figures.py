"""Figures of the gradient index: TF-IDF recall over the whole indexed corpus, and projection accuracy."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .figures import figure_axes, plot_recall_curve


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


WHITENING = {True: ("whitened", "#1f77b4"), False: ("plain", "#ff7f0e")}  # index.whiten: name, colour


def plot_projection_accuracy(table: pd.DataFrame, path: str | os.PathLike, n_sample: int) -> str:
    """`gradient_index.projection_accuracy`: Spearman ρ, top-10 overlap and recall of the exact top 10 in the
    projected top-n with exact EK-FAC scores, against k, whitened and plain: the mean over projection seeds and
    queries, and the spread of the per-seed means (the sketch's own noise)."""
    n = int(table["n"].max()) if len(table) else 0
    panels = (("spearman", "Spearman ρ"), ("top_overlap", "top-10 overlap"), ("recall_at_n", f"top-10 in top-{n}"))
    with figure_axes(path, ncols=3, size=(12.0, 3.6)) as (_fig, axes):
        for ax, (column, label) in zip(axes, panels):
            for whiten, group in table.groupby("whiten", sort=False):
                name, colour = WHITENING[bool(whiten)]
                per_seed = group.groupby(["k", "seed"])[column].mean()  # mean over queries
                stats = per_seed.groupby("k").agg(["mean", "min", "max"])
                ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.15)
                label_of = f"{name} (index.whiten: {str(bool(whiten)).lower()}): mean (band: seeds)"
                ax.plot(stats.index, stats["mean"], "o-", color=colour, lw=2, label=label_of)
            ks = sorted(table["k"].unique())
            ax.set(xscale="log", ylim=(min(0, float(table[column].min())), 1.03), xlabel="k (k × k per layer)")
            ax.set(ylabel=f"{label} with exact EK-FAC", title=label)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
        axes[0].axhline(0.9, color="0.5", ls="--", lw=0.8)
        axes[0].legend(loc="upper left", fontsize=7)
    seeds = table["seed"].nunique()
    means = table.groupby(["whiten", "k"])["spearman"].mean()
    reach = []
    for whiten in sorted(table["whiten"].unique(), reverse=True):
        rho = means.loc[whiten]
        good = rho.index[(rho >= 0.9).to_numpy()]
        name = WHITENING[bool(whiten)][0]
        reach.append(
            f"{name}: mean ρ reaches 0.9 at k = {good[0]}" if len(good) else
            f"{name}: mean ρ stays below 0.9 (best {np.nanmax(rho):.2f} at k = {rho.idxmax()})"
        )  # fmt: skip
    return (
        f"Influence through the gradient index (both sides of every layer's gradient projected to k × k; blue: "
        f"whitened by the factors' Kronecker eigenbasis, orange: plain) against exact full-rank EK-FAC influence, "
        f"over the sample analysis's {n_sample} sequences: Spearman ρ (left), the share of the exact top-10 in the "
        f"projected top-10 (middle) and in the projected top-{n} (right: what scoring.candidates: index rescores), "
        f"per k; lines are means over {seeds} projection seed(s) and the queries, bands the range of the per-seed "
        f"means over queries; {'; '.join(reach)}."
    )
