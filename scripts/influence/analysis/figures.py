"""The paper's figures, one function per table of `analysis/tables.py`.

Each function takes the table, writes a PNG to `path` and returns a one-paragraph caption.
Every figure is drawn through `plotting.figure_axes` (the shared style).
"""

from __future__ import annotations

import os

import matplotlib as mpl
import numpy as np
import pandas as pd

from ..plotting import INFLUENCE_UNIT, figure_axes, plot_recall_curve
from .probes import CONTROL, GROUPS
from .tables import power_law_fits


def plot_sparsity(sorted_table: pd.DataFrame, path: str | os.PathLike, fits: pd.DataFrame | None = None) -> str:
    """Positive influences against rank (log-log) per query, with the fitted power-law tail dashed.

    `sorted_table` is `sorted_influences`; `fits` is `power_law_fits` (fitted here when omitted).
    """
    fits = power_law_fits(sorted_table) if fits is None else fits
    fits = fits.set_index("query_id")
    queries = sorted(sorted_table["query_id"].unique())
    with figure_axes(path) as (_fig, (ax,)):
        colours = mpl.colormaps["viridis"](np.linspace(0, 0.9, max(len(queries), 1)))
        for colour, query_id in zip(colours, queries):
            rows = sorted_table[(sorted_table["query_id"] == query_id) & (sorted_table["influence"] > 0)]
            ax.plot(rows["rank"], rows["influence"], color=colour, lw=1, label=query_id)
            fit = fits.loc[query_id] if query_id in fits.index else None
            if fit is not None and np.isfinite(fit["exponent"]):
                # In rank-size coordinates the tail is x_min·(r / n_tail)^(-1/(α-1)) for r ≤ n_tail.
                r = np.geomspace(1, fit["n_tail"], 50)
                ax.plot(r, fit["x_min"] * (r / fit["n_tail"]) ** -fit["rank_exponent"], "--", color=colour, lw=1.5)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="rank of candidate sequence (1 = most influential)",
            ylabel=INFLUENCE_UNIT,
            title="Sorted influences and power-law tail fits",
        )
        if 0 < len(queries) <= 10:
            ax.legend(loc="lower left")
    alpha = fits["exponent"].median()
    return (
        f"Positive influence of every scored candidate sequence on each query's completion, sorted in "
        f"decreasing order, on log-log axes (solid; one curve per query, {len(queries)} queries). Dashed: "
        f"continuous power-law maximum-likelihood fits to each tail (Clauset et al. 2009); median density "
        f"exponent α = {alpha:.2f}, i.e. rank-size slope −1/(α−1) = {-1 / (alpha - 1):.2f}. A straight tail "
        f"means a power law; α close to 1 (a steep rank-size line) means a few sequences hold most of the "
        f"influence, larger α means influence is spread over many sequences."
    )


def plot_top_share(shares: pd.DataFrame, path: str | os.PathLike) -> str:
    """Bars: mean share of positive influence held by the top k sequences; dots: single queries."""
    ks = sorted(shares["k"].unique())
    with figure_axes(path, size=(5.0, 3.8)) as (_fig, (ax,)):
        means = [shares.loc[shares["k"] == k, "share"].mean() for k in ks]
        ax.bar(range(len(ks)), means, color="#9ecae1", label="mean over queries")
        jitter = np.random.default_rng(0)  # fixed: the same table always draws the same figure
        for i, k in enumerate(ks):
            values = shares.loc[shares["k"] == k, "share"]
            ax.plot(i + jitter.uniform(-0.2, 0.2, len(values)), values, "o", ms=3, color="#08519c", alpha=0.7)
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set(
            ylim=(0, 1.05),
            xlabel="k (number of most influential sequences)",
            ylabel="share of total positive influence",
            title="Influence held by the top k sequences",
        )
    summary = ", ".join(f"top {k}: {m:.0%}" for k, m in zip(ks, means))
    return (
        f"Share of each query's total positive influence held by its k most influential candidate sequences "
        f"(bars: mean over {shares['query_id'].nunique()} queries, {summary}; dots: single queries). "
        f"High shares at small k mean influence is sparse: a handful of sequences account for most of the "
        f"effect on the completion."
    )


def _short_layer(names: list[str]) -> list[str]:
    """Drop the prefix all names share up to a dot ('model.layers.') so tick labels stay short."""
    prefix = os.path.commonprefix(names) if len(names) > 1 else ""
    prefix = prefix[: prefix.rfind(".") + 1]
    return [n[len(prefix) :] for n in names]


def plot_layer_heatmap(
    shares: pd.DataFrame, path: str | os.PathLike, top_n: int | None = None, mode: str = "abs"
) -> str:
    """Heatmap of `layer_shares`: queries (rows) × layers in depth order (columns); `top_n` and `mode`
    as passed to `layer_shares`, for the caption."""
    layers = list(dict.fromkeys(shares["layer"]))  # the table is already in depth order
    matrix = shares.pivot(index="query_id", columns="layer", values="share")[layers]
    height = min(12.0, max(3.5, 1.8 + 0.22 * len(matrix)))
    with figure_axes(path, size=(min(10.0, max(6.4, 0.12 * len(layers) + 2.5)), height)) as (fig, (ax,)):
        image = ax.imshow(matrix.to_numpy(float), aspect="auto", cmap="viridis", vmin=0)
        step = max(1, len(layers) // 40)  # at most ~40 labels stay legible
        ax.set_xticks(range(0, len(layers), step), _short_layer(layers)[::step], rotation=90)
        ax.set_yticks(range(len(matrix)), matrix.index, fontsize=7 if len(matrix) > 25 else 8)
        ax.set(xlabel="tracked layer (input → output)", ylabel="query", title="Layer-wise share of influence")
        fig.colorbar(image, ax=ax, label="share of influence")
    peak = shares.groupby("layer", sort=False)["share"].mean().idxmax()
    top = f"{top_n} most influential sequences" if top_n else "most influential sequences"
    parts = "absolute values" if mode == "abs" else "positive parts"
    return (
        f"Share of the influence of each query's {top} carried by each tracked layer (rows: queries; "
        f"columns: layers from input to output; each row sums to 1, computed from the {parts} of the "
        f"per-layer influences). The layer with the largest mean share is {peak}. "
        f"Look for where influence concentrates: lower and upper layers versus the middle, and whether "
        f"queries of the same kind share a pattern."
    )


def _paired_bars(table: pd.DataFrame, path: str | os.PathLike, title: str) -> None:
    """Two panels of grouped bars (x: group, hue: lang): relative influence and top-k overlap."""
    groups, langs = sorted(table["group"].unique()), sorted(table["lang"].astype(str).unique())
    width = 0.8 / max(len(langs), 1)
    with figure_axes(path, ncols=2, size=(max(7.5, 0.6 * len(groups) * 2 + 2), 4.0)) as (fig, axes):
        colours = mpl.colormaps["tab10"].colors
        for j, lang in enumerate(langs):
            rows = table[table["lang"].astype(str) == lang].set_index("group").reindex(groups)
            x = np.arange(len(groups)) + (j - (len(langs) - 1) / 2) * width
            axes[0].bar(x, rows["relative_influence"], width, color=colours[j % 10], label=lang)
            axes[1].bar(x, rows["topk_overlap"], width, color=colours[j % 10], label=lang)
        axes[0].axhline(1, color="k", ls="--", lw=1)
        axes[0].axhline(0, color="k", lw=0.5)
        axes[0].set(ylabel="relative influence (ratio to reference)", title="Relative influence")
        axes[1].set(ylabel="fraction of reference top-k kept", ylim=(0, 1.05), title="Top-k overlap")
        for ax in axes:
            ax.set_xticks(range(len(groups)), groups, rotation=45, ha="right")
            ax.set_xlabel("fact (query group)")
        axes[1].legend(title="language")
        fig.suptitle(title)


def plot_cross_lingual(table: pd.DataFrame, path: str | os.PathLike, k: int | None = None) -> str:
    """Bars of `cross_lingual`: relative influence and top-k overlap per fact and language."""
    _paired_bars(table, path, "Cross-lingual transfer of influential sequences")
    top = f"top-{k}" if k else "top-k"
    mean = table.groupby("lang")["relative_influence"].mean()
    summary = ", ".join(f"{lang}: {v:.2f}" for lang, v in mean.items())
    return (
        f"For each fact, the English query's {top} most influential sequences are scored on each translation. "
        f"Left: the sum of their influence on the translation divided by their sum on the English query "
        f"(dashed line at 1 = transfers fully; mean by language {summary}). Right: the fraction of the "
        f"English {top} that is also in the translation's {top}. Values near 0 mean the influential "
        f"sequences are language-specific; the paper finds transfer grows with model size."
    )


def plot_flip(table: pd.DataFrame, path: str | os.PathLike, k: int | None = None) -> str:
    """Bars of `flip_comparison`: flipped-order queries against their original."""
    _paired_bars(table, path, "Flipped queries")
    top = f"top-{k}" if k else "top-k"
    return (
        f"For each fact, the original query's {top} most influential sequences are scored on the query with "
        f"the phrase order flipped (e.g. 'The capital of France is Paris' vs 'Paris is the capital of France'). "
        f"Left: their summed influence on the flipped query relative to the original (dashed line at 1; mean "
        f"{table['relative_influence'].mean():.2f}). Right: overlap of the two {top} sets. Values near 0 mean "
        f"sequences that support one order do not support the other, the asymmetry the paper reports."
    )


def plot_rank_agreement(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """`rank_agreement_sweep`: Spearman ρ and relative error against the query approximation rank."""
    ranks = sorted(table["approx_rank"].unique())
    with figure_axes(path, ncols=2, size=(8.0, 3.8)) as (fig, axes):
        for ax, column, label, title in (
            (axes[0], "spearman", "Spearman ρ with full-rank scores", "Rank correlation"),
            (axes[1], "relative_l2", "relative L2 error ‖low − full‖/‖full‖", "Relative error"),
        ):
            wide = table.pivot(index="approx_rank", columns="query_id", values=column).reindex(ranks)
            ax.plot(wide.index, wide.to_numpy(), color="0.75", lw=0.8)
            ax.plot(wide.index, wide.median(axis=1), "o-", color="#d62728", lw=2, label="median over queries")
            ax.set(xscale="log", xlabel="query gradient approximation rank r", ylabel=label, title=title)
            ax.set_xticks(ranks, [str(r) for r in ranks])
        axes[0].legend(loc="lower right")
        fig.suptitle("Low-rank query batching against full-rank queries")
    best = table[table["approx_rank"] == ranks[-1]]["spearman"].median()
    return (
        f"Agreement between influences computed with rank-r approximations of the preconditioned query "
        f"gradients and with the full-rank gradients, over the same candidates (grey: single queries; red: "
        f"median). Left: Spearman rank correlation; right: relative L2 error. At the largest rank shown "
        f"(r = {ranks[-1]}) the median ρ is {best:.3f}; look for the smallest rank where ρ flattens near 1, "
        f"which is the rank query batching can use without changing the rankings."
    )


def plot_estimator_correlations(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Symmetric heatmap of `estimator_correlations` (mean ρ, with the minimum in parentheses)."""
    names = list(dict.fromkeys(list(table["estimator_a"]) + list(table["estimator_b"])))
    mean, low = np.eye(len(names)), np.eye(len(names))
    for row in table.itertuples():
        i, j = names.index(row.estimator_a), names.index(row.estimator_b)
        mean[i, j] = mean[j, i] = row.spearman_mean
        low[i, j] = low[j, i] = row.spearman_min
    with figure_axes(path, size=(1.2 * len(names) + 2.5, 1.0 * len(names) + 1.5)) as (fig, (ax,)):
        image = ax.imshow(mean, cmap="RdBu", vmin=-1, vmax=1)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(
                    j,
                    i,
                    f"{mean[i, j]:.2f}\n({low[i, j]:.2f})",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if abs(mean[i, j]) > 0.6 else "black",
                )
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel="estimator", ylabel="estimator", title="Agreement between estimators")
        fig.colorbar(image, ax=ax, label="mean Spearman ρ over queries")
    return (
        f"Spearman rank correlation between the influence scores of {len(names)} estimators on the same "
        f"query-candidate pairs, computed per query and averaged (cell text: mean, with the worst query in "
        f"parentheses). A cheap estimator that correlates highly with EK-FAC ranks training sequences alike; "
        f"low correlation with `identity` (the plain gradient dot product) shows how much the curvature "
        f"changes which sequences count as influential."
    )


def plot_tfidf_recall(
    table: pd.DataFrame, path: str | os.PathLike, n_sample: int | None = None, estimator: str = "ekfac"
) -> str:
    """`tfidf_recall`: recall of the true top sequences against the TF-IDF cut-off k′."""
    wide = table.pivot(index="k_prime", columns="query_id", values="recall").sort_index()
    true_k = int(table["true_k"].iloc[0]) if "true_k" in table and len(table) else None
    of = f" of {n_sample} sampled" if n_sample else ""
    plot_recall_curve(
        wide,
        path,
        xlabel=f"k′ (TF-IDF candidates kept{of} sequences)",
        ylabel=f"recall of true top-{true_k or 'k'} (fraction)",
        title="TF-IDF prefilter recall",
        plain_ticks=True,
    )
    half = wide.index[(wide.mean(axis=1) >= 0.5).to_numpy()]
    reach = f"mean recall reaches 0.5 at k′ = {half[0]}" if len(half) else "mean recall stays below 0.5"
    scale = f"; k′/{n_sample} is the fraction of the corpus the filter would keep" if n_sample else ""
    return (
        f"Of each query's true top-{true_k or 'k'} most influential sequences ({estimator} influence scored "
        f"exhaustively over a random sample{of} corpus sequences), the fraction that the TF-IDF prefilter "
        f"ranks within its top k′ of the same sample (grey: single queries; blue: mean){scale}; {reach}. "
        f"Low recall at the configured k′ means the prefilter misses influential sequences that share few "
        f"words with the query, and a larger tfidf.top_k (or none) is worth its cost."
    )


def plot_phrase_probes(summary: pd.DataFrame, path: str | os.PathLike) -> str:
    """`probes.probe_summary`: each probe group's influence relative to the query's top corpus sequence."""
    groups = [g for g in (*GROUPS, CONTROL) if g in set(summary["group"])]
    queries = sorted(summary["query_id"].unique())
    with figure_axes(path, size=(6.4, 4.0)) as (_fig, (ax,)):
        means = summary.groupby("group")["relative"].mean().reindex(groups)
        ax.bar(range(len(groups)), means.to_numpy(), color="0.85", label="mean over queries")
        for q, query_id in enumerate(queries):
            rows = summary[summary["query_id"] == query_id].set_index("group").reindex(groups)
            x = np.arange(len(groups)) + (q - (len(queries) - 1) / 2) * 0.6 / max(len(queries), 1)
            err = np.abs(rows[["relative_ci_low", "relative_ci_high"]].to_numpy().T - rows["relative"].to_numpy())
            ax.errorbar(x, rows["relative"], yerr=np.nan_to_num(err), fmt="o", ms=4, capsize=2, label=query_id)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(groups)), [g.replace("_", " ") for g in groups])
        ax.set(xlabel="probe group", ylabel="influence / query's top corpus influence", title="Phrase-order probes")
        ax.legend(fontsize=7, ncol=2, loc="upper right")
    summary_text = ", ".join(f"{g.replace('_', ' ')} {v:.2f}" for g, v in means.items())
    alone = "" if CONTROL in groups else " Only one query's fact has probes, so there is no other-fact baseline."
    return (
        f"Synthetic sequences that state each query's fact with its two key phrases in the query's order "
        f"(same order), in flipped order, or with one phrase removed, scored like corpus candidates; "
        f"'other fact' is the same wording about the other queries' facts, a baseline. Bars: mean over "
        f"queries of the group's mean influence divided by the query's largest corpus influence (means: "
        f"{summary_text}); markers: single queries with 95% Student-t intervals over templates. The paper "
        f"finds that only same-order sequences carry influence: a flipped bar near the other-fact baseline "
        f"means the model's answer does not draw on the reversed statement.{alone}"
    )
