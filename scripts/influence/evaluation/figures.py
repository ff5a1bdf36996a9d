"""Figures of the ground-truth evaluation, drawn from the evaluation table (`evaluation.TABLE_COLUMNS`).

Each function writes a PNG and returns a caption with the numbers it shows.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..engine import estimators
from ..figures import figure_axes


def _sorted(names) -> list[str]:
    return sorted(names, key=estimators.sort_key)


def _errorbars(rows: pd.DataFrame) -> np.ndarray:
    low = (rows["value"] - rows["ci_low"]).fillna(0).clip(lower=0)
    high = (rows["ci_high"] - rows["value"]).fillna(0).clip(lower=0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def plot_ihvp(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Spearman ρ and relative error against the exact influence as functions of the damping."""
    rows = table[table["measure"].isin(["spearman", "relative_error"])].copy()
    rows[["fisher", "damping"]] = rows["variant"].str.extract(r"(\w+)_fisher/damping~(.+)")
    rows["damping"] = rows["damping"].astype(float)
    with figure_axes(path, ncols=2, size=(9.0, 4.0)) as (fig, axes):
        for ax, measure, label in zip(
            axes, ["spearman", "relative_error"], ["Spearman ρ with exact influence", "relative error ‖s − s*‖ / ‖s*‖"]
        ):
            for (estimator, fisher), group in rows[rows["measure"] == measure].groupby(["estimator", "fisher"]):
                group = group.sort_values("damping")
                ax.errorbar(
                    group["damping"],
                    group["value"],
                    yerr=_errorbars(group),
                    marker="o",
                    capsize=2,
                    color=estimators.colour(estimator),
                    linestyle="-" if fisher == "true" else "--",
                    label=f"{estimator} ({fisher} Fisher)",
                )
            ax.set_xscale("log")
            ax.set_xlabel("damping λ / (tr F / P)")
            ax.set_ylabel(label)
            if measure == "relative_error":
                ax.set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle("iHVP accuracy on the tiny model")
    ranked = rows[(rows["measure"] == "spearman") & (rows["estimator"] != "block_exact")]
    best = ranked.sort_values("value", ascending=False).iloc[0]
    return (
        "Influence scores of each estimator against the exact influence (dense damped Fisher inverse over all "
        "tracked parameters) on the tiny model, as functions of the damping (relative to the Fisher's mean "
        "eigenvalue), for the true (solid) and empirical (dashed) Fisher; mean over queries with 95% t "
        f"intervals. Highest rank correlation of an estimator: {best['estimator']} with the {best['fisher']} Fisher at damping "
        f"{best['damping']:g}, ρ = {best['value']:.3f}."
    )


def _bars(ax, rows: pd.DataFrame, groups: list[str], group_column: str) -> None:
    shown = _sorted(rows["estimator"].unique())
    width = 0.8 / max(len(groups), 1)
    for i, group in enumerate(groups):
        part = rows[rows[group_column] == group].set_index("estimator").reindex(shown)
        ax.bar(
            np.arange(len(shown)) + (i - (len(groups) - 1) / 2) * width,
            part["value"].fillna(0),
            width,
            yerr=_errorbars(part.reset_index()),
            capsize=2,
            label=group,
        )
    ax.set_xticks(np.arange(len(shown)), shown, rotation=30)


def plot_lds(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Mean LDS per estimator with its interval."""
    rows = table[table["measure"] == "lds"]
    with figure_axes(path) as (fig, axes):
        _bars(axes[0], rows, sorted(rows["model"].unique()), "model")
        axes[0].axhline(0, color="grey", linewidth=0.8)
        axes[0].set_xlabel("estimator")
        axes[0].set_ylabel("LDS (mean Spearman ρ over queries)")
        axes[0].set_title("Linear datamodeling score")
    best = rows.sort_values("value", ascending=False).iloc[0]
    n_queries = int(best["n"])
    return (
        "Linear datamodeling score: for each query, Spearman's ρ between the predicted effect of a random half "
        "of the training corpus (the sum of its documents' scores) and the measured log-probability of the "
        "completion after retraining the tiny model from scratch on that half; bars are the mean over "
        f"{n_queries} query-seed pairs with 95% t intervals. Best: {best['estimator']} "
        f"({best['value']:.3f}). 0 is a random predictor, 1 a perfect one."
    )


def plot_fact_tracing(table: pd.DataFrame, path: str | os.PathLike, k: int) -> str:
    """recall@k and MRR of the planted documents per estimator and query variant, one row of panels per model."""
    measures = [f"recall_at_{k}", "mrr"]
    rows = table[table["measure"].isin(measures)]
    models = sorted(rows["model"].unique())
    variants = list(dict.fromkeys(rows["variant"]))
    lines = []
    with figure_axes(path, ncols=2 * len(models), size=(6.0 * len(models), 4.2)) as (fig, axes):
        for m, model in enumerate(models):
            for j, measure in enumerate(measures):
                ax = axes[2 * m + j]
                _bars(ax, rows[(rows["model"] == model) & (rows["measure"] == measure)], variants, "variant")
                ax.set_ylim(0, 1.05)
                ax.set_xlabel("estimator")
                ax.set_ylabel(f"recall@{k}" if j == 0 else "MRR")
                ax.set_title(f"{model} model")
            overall = rows[(rows["model"] == model) & (rows["variant"] == "all") & (rows["measure"] == measures[0])]
            best = overall.sort_values("value", ascending=False).iloc[0]
            lines.append(f"{model}: best recall@{k} {best['estimator']} ({best['value']:.2f})")
        axes[0].legend(title="query variant", fontsize=7)
    return (
        f"Fact tracing: recall@{k} and mean reciprocal rank of the documents that state each query's planted "
        "fact, per estimator and query variant (original wording, paraphrase, French translation, flipped "
        f"order), with 95% t intervals over queries and seeds. {'; '.join(lines)}."
    )
