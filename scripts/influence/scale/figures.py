"""The model sweep's scale figures, one function per table of `scale/tables.py`; each returns its caption.

The x axis is the parameter count on a log scale (the layer-depth figure: relative depth, one line per
model). Drawn with `figures.figure_axes`, like every other figure of the workflow.
"""

from __future__ import annotations

import os

import matplotlib as mpl
import numpy as np
import pandas as pd

from ..plotting import figure_axes

PARAMETERS = "parameters (log scale)"


def _model_ticks(ax, table: pd.DataFrame) -> None:
    """Log x axis with each model's name under its parameter count."""
    points = table.drop_duplicates("model")
    ax.set_xscale("log")
    ax.set_xticks(points["parameters"], [f"{m}\n{p / 1e6:.3g}M" for m, p in zip(points["model"], points["parameters"])])
    ax.minorticks_off()
    low, high = points["parameters"].min(), points["parameters"].max()
    ax.set_xlim(low / 1.5, high * 1.5)  # room around one or two points


def _size_axes(ax, table: pd.DataFrame, ylabel: str, title: str, **limits) -> None:
    """Labels of an axis whose x is the parameter count, with the models' ticks."""
    ax.set(xlabel=PARAMETERS, ylabel=ylabel, title=title, **limits)
    _model_ticks(ax, table)


def _interval_line(ax, rows: pd.DataFrame, y: str, label: str | None = None, **style) -> None:
    """Values with their interval as error bars, joined across models."""
    error = np.vstack([rows[y] - rows["ci_low"], rows["ci_high"] - rows[y]]).clip(min=0)
    ax.errorbar(rows["parameters"], rows[y], yerr=np.nan_to_num(error), marker="o", capsize=3, label=label, **style)


def _values(table: pd.DataFrame, column: str, **where) -> str:
    """'model: value' for every model, for captions."""
    rows = table
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return ", ".join(f"{r.model} {getattr(r, column):.3g}" for r in rows.itertuples())


def plot_sparsity(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Left: tail exponent α per model; right: top-k shares per model."""
    with figure_axes(path, ncols=2, size=(8.0, 3.8)) as (fig, axes):
        _interval_line(axes[0], table[table["measure"] == "exponent"], "median", color="#08519c")
        _size_axes(axes[0], table, "power-law tail exponent α (median)", "Tail exponent")
        colours = mpl.colormaps["viridis"](np.linspace(0, 0.8, 3))
        for colour, measure in zip(colours, ["top_1_share", "top_10_share", "top_100_share"]):
            label = measure.replace("_share", "").replace("_", " ")
            _interval_line(axes[1], table[table["measure"] == measure], "median", label=label, color=colour)
        _size_axes(axes[1], table, "share of positive influence (median)", "Top-k share", ylim=(0, 1.05))
        axes[1].legend(loc="best")
        fig.suptitle("Sparsity of influence against model size")
    return (
        f"Sparsity of influence per model, x = parameter count (log). Left: the median over queries of the "
        f"power-law tail exponent α of each query's sorted positive influences ({_values(table, 'median', measure='exponent')}); "
        f"α is the density exponent, so the rank-size slope is −1/(α−1): α near 1 means a few sequences hold most "
        f"of the influence, a larger α spreads it over many. Right: the median share of a query's positive influence "
        f"held by its top 1, 10 and 100 sequences (top 10: {_values(table, 'median', measure='top_10_share')}). "
        f"Error bars: bootstrap 95% intervals of the median over queries. Grosse et al. find influence less sparse "
        f"in larger models (larger α, smaller top-k shares)."
    )


def plot_cross_lingual(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Mean relative influence and top-k overlap of translated queries, per model."""
    with figure_axes(path, ncols=2, size=(8.0, 3.8)) as (fig, axes):
        for ax, measure, label in (
            (axes[0], "relative_influence", "English top-k influence on the translation / on English"),
            (axes[1], "topk_overlap", "share of the English top-k in the translation's top-k"),
        ):
            _interval_line(ax, table[table["measure"] == measure], "mean", color="#2ca02c")
            ax.axhline(0, color="0.6", lw=0.8)
            _size_axes(ax, table, label, measure.replace("_", " "))
        fig.suptitle("Cross-lingual transfer against model size")
    return (
        f"Cross-lingual transfer per model, x = parameter count (log). Left: the summed influence of the English "
        f"query's top-k sequences on its translations, relative to their influence on the English query (1 = full "
        f"transfer; {_values(table, 'mean', measure='relative_influence')}). Right: the share of the English top-k "
        f"that is also in the translation's top-k ({_values(table, 'mean', measure='topk_overlap')}). Means over "
        f"translated queries with Student-t 95% intervals. Grosse et al. find transfer grows with model size."
    )


def plot_phrase_order(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Same-order minus flipped probe influence per model, with the two groups' means."""
    with figure_axes(path, size=(5.6, 3.8)) as (_fig, (ax,)):
        _interval_line(ax, table, "difference", label="same order − flipped (95% interval)", color="#d62728")
        ax.plot(table["parameters"], table["same_order"], "s--", color="#1f77b4", label="same order")
        ax.plot(table["parameters"], table["flipped"], "v--", color="#ff7f0e", label="flipped")
        ax.axhline(0, color="0.6", lw=0.8)
        _size_axes(ax, table, "probe influence / top corpus influence", "Phrase-order asymmetry")
        ax.legend(loc="best")
    return (
        f"Phrase-order probes per model, x = parameter count (log): synthetic sequences stating each query's fact "
        f"with its key phrases in the query's order and flipped, scored like corpus candidates, each relative to "
        f"the query's largest corpus influence. Red: mean over queries of same-order minus flipped, with a "
        f"Student-t 95% interval ({_values(table, 'difference')}); dashed: the two groups' means. Grosse et al. "
        f"find the asymmetry (a positive difference) at every model size."
    )


def plot_layer_depth(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Mean share of influence per relative depth, one line per model, scaled so that 1 is a uniform share."""
    rows = table.dropna(subset=["relative_depth"])
    keys = ["model", "parameters", "n_layers", "relative_depth"]
    means = rows.groupby(keys, sort=False)["share"].mean().reset_index()
    # A model with L blocks gives each block 1/L on average: share × L puts models of any depth on one scale.
    means["scaled"] = means["share"] * means["n_layers"]
    models = means.drop_duplicates("model").sort_values("parameters")
    with figure_axes(path, size=(6.4, 3.8)) as (_fig, (ax,)):
        colours = mpl.colormaps["plasma"](np.linspace(0, 0.8, max(len(models), 1)))
        for colour, model in zip(colours, models.itertuples()):
            line = means[means["model"] == model.model].sort_values("relative_depth")
            label = f"{model.model} ({model.parameters / 1e6:.3g}M, {model.n_layers} blocks)"
            ax.plot(line["relative_depth"], line["scaled"], "o-", ms=3, color=colour, label=label)
        ax.axhline(1, color="0.6", lw=0.8, ls="--")
        ax.set(
            xlabel="relative depth (block index / number of blocks)",
            ylabel="influence share × number of blocks",
            title="Where the influence sits, by depth (1 = uniform)",
            xlim=(-0.02, 1.0),
        )
        ax.legend(loc="best")
    peak = ", ".join(
        f"{m} at {g.loc[g['share'].idxmax(), 'relative_depth']:.2f}" for m, g in means.groupby("model", sort=False)
    )
    return (
        f"Share of each query's top sequences' influence (absolute per-layer influence, summed over a block's "
        f"tracked modules) by relative depth = block index / number of blocks, so models of different depth share "
        f"one axis; mean over queries, one line per model, multiplied by the model's number of blocks so that 1 "
        f"(dashed) is an even spread (the table holds the shares themselves, which sum to 1 per model and query). "
        f"Largest share: {peak}. Grosse et al. find the influence spread over the layers, with the middle layers "
        f"carrying the more abstract matches in larger models."
    )


def plot_estimator_agreement(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Mean Spearman ρ per estimator pair against model size."""
    pairs = table.drop_duplicates(["estimator_a", "estimator_b"])[["estimator_a", "estimator_b"]]
    with figure_axes(path, size=(6.4, 3.8)) as (_fig, (ax,)):
        colours = mpl.colormaps["tab10"](np.arange(len(pairs)) % 10)
        for colour, pair in zip(colours, pairs.itertuples()):
            rows = table[(table["estimator_a"] == pair.estimator_a) & (table["estimator_b"] == pair.estimator_b)]
            ax.plot(
                rows["parameters"],
                rows["spearman_mean"],
                "o-",
                color=colour,
                label=f"{pair.estimator_a} vs {pair.estimator_b}",
            )
        _size_axes(ax, table, "Spearman ρ (mean over queries)", "Agreement between estimators", ylim=(-1.05, 1.05))
        ax.legend(loc="best", fontsize=7)
    ekfac_identity = table[(table["estimator_a"] == "ekfac") & (table["estimator_b"] == "identity")]
    return (
        f"Rank agreement between estimators on each model's corpus sample, x = parameter count (log): Spearman ρ "
        f"between two estimators' influences on the same query-sequence pairs, averaged over the sample's queries, "
        f"one line per estimator pair (EK-FAC vs identity: {_values(ekfac_identity, 'spearman_mean') or 'not scored'}). "
        f"Falling agreement with size means the curvature matters more for larger models."
    )


def plot_query_batching(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Spearman ρ of rank-r against full-rank EK-FAC per model, one line per rank."""
    ranks = sorted(table["approx_rank"].unique())
    with figure_axes(path, size=(6.4, 3.8)) as (_fig, (ax,)):
        colours = mpl.colormaps["viridis"](np.linspace(0, 0.85, max(len(ranks), 1)))
        for colour, rank in zip(colours, ranks):
            _interval_line(ax, table[table["approx_rank"] == rank], "spearman_mean", label=f"rank {rank}", color=colour)
        _size_axes(ax, table, "Spearman ρ with full-rank EK-FAC", "Query batching accuracy", ylim=(-1.05, 1.05))
        ax.legend(loc="best")
    return (
        f"Accuracy of low-rank query batching per model, x = parameter count (log): Spearman ρ between influences "
        f"from rank-r approximations of the preconditioned query gradients and from the full-rank ones on the "
        f"corpus sample, mean over queries with Student-t 95% intervals, one line per rank (rank {ranks[-1] if ranks else '-'}: "
        f"{_values(table, 'spearman_mean', approx_rank=ranks[-1]) if ranks else '-'}). A rank that keeps ρ near 1 "
        f"in the larger model can batch its queries."
    )
