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


def plot_projection_accuracy(table: pd.DataFrame, path: str | os.PathLike, n_sample: int) -> str:
    """`gradient_index.projection_accuracy`: Spearman ρ and top-10 overlap with exact EK-FAC scores, against k."""
    summary = table.groupby("k")[["spearman", "top_overlap"]].agg(["mean", "min", "max"])
    with figure_axes(path, ncols=2, size=(8.4, 3.6)) as (_fig, axes):
        for ax, column, label in zip(axes, ("spearman", "top_overlap"), ("Spearman ρ", "top-10 overlap")):
            stats = summary[column]
            ax.fill_between(stats.index, stats["min"], stats["max"], color="#1f77b4", alpha=0.2, label="min–max")
            ax.plot(stats.index, stats["mean"], "o-", color="#1f77b4", lw=2, label="mean over queries")
            ax.set(xscale="log", ylim=(min(0, float(stats["min"].min())), 1.03), xlabel="k (k × k per layer)")
            ax.set(ylabel=f"{label} with exact EK-FAC", title=label)
            ax.set_xticks(stats.index, [str(k) for k in stats.index])
            ax.minorticks_off()
        axes[0].axhline(0.9, color="0.5", ls="--", lw=0.8)
        axes[0].legend(loc="lower right")
    rho = summary[("spearman", "mean")]
    good = rho.index[(rho >= 0.9).to_numpy()]
    reach = (
        f"mean ρ reaches 0.9 at k = {good[0]}" if len(good) else f"mean ρ stays below 0.9 (best {np.nanmax(rho):.2f})"
    )
    return (
        f"Influence through the gradient index (both sides of every layer's gradient projected to k × k) against "
        f"exact full-rank EK-FAC influence, over the sample analysis's {n_sample} sequences: Spearman ρ (left) and "
        f"the share of the exact top-10 found in the projected top-10 (right), per k; {reach}."
    )
