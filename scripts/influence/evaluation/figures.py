"""Figures of the ground-truth evaluation, drawn from the evaluation table (`evaluation.TABLE_COLUMNS`).

Each function writes a PNG and returns a caption with the numbers it shows.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..engine.estimators import colour, sort_key
from ..plotting import figure_axes


def _sorted(estimators) -> list[str]:
    return sorted(estimators, key=sort_key)


def _difficulties(table: pd.DataFrame) -> list[str]:
    return sorted(table["difficulty"].unique(), key=lambda d: (d != "easy", d))


def _errorbars(rows: pd.DataFrame) -> np.ndarray:
    low = (rows["value"] - rows["ci_low"]).fillna(0).clip(lower=0)
    high = (rows["ci_high"] - rows["value"]).fillna(0).clip(lower=0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def plot_ihvp(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Spearman ρ and relative error against the exact influence as functions of the damping, per difficulty."""
    rows = table[table["measure"].isin(["spearman", "relative_error"])].copy()
    rows[["fisher", "damping"]] = rows["variant"].str.extract(r"(\w+)_fisher/damping~(.+)")
    rows["damping"] = rows["damping"].astype(float)
    difficulties = _difficulties(rows)
    with figure_axes(path, ncols=2 * len(difficulties), size=(9.0 * len(difficulties), 4.0)) as (fig, axes):
        for d, difficulty in enumerate(difficulties):
            for ax, measure, label in zip(
                axes[2 * d : 2 * d + 2],
                ["spearman", "relative_error"],
                ["Spearman ρ with exact influence", "relative error ‖s − s*‖ / ‖s*‖"],
            ):
                chosen = rows[(rows["measure"] == measure) & (rows["difficulty"] == difficulty)]
                for (estimator, fisher), group in chosen.groupby(["estimator", "fisher"]):
                    group = group.sort_values("damping")
                    ax.errorbar(
                        group["damping"],
                        group["value"],
                        yerr=_errorbars(group),
                        marker="o",
                        capsize=2,
                        color=colour(estimator),
                        linestyle="-" if fisher == "true" else "--",
                        label=f"{estimator} ({fisher} Fisher)",
                    )
                ax.set_xscale("log")
                ax.set_xlabel("damping λ / (tr F / P)")
                ax.set_ylabel(label)
                ax.set_title(f"{difficulty} corpus")
                if measure == "relative_error":
                    ax.set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle("iHVP accuracy on the tiny model")
    ranked = rows[(rows["measure"] == "spearman") & (rows["estimator"] != "block_exact")]
    best = ranked.sort_values("value", ascending=False).iloc[0]
    return (
        "Influence scores of each estimator against the exact influence (dense damped Fisher inverse over all "
        "tracked parameters) on the tiny model, as functions of the damping (relative to the Fisher's mean "
        "eigenvalue), for the true (solid) and empirical (dashed) Fisher, one pair of panels per difficulty; "
        f"mean over queries and seeds with 95% bootstrap intervals over facts. Highest rank correlation of an "
        f"estimator: {best['estimator']} with the {best['fisher']} Fisher at damping {best['damping']:g} "
        f"({best['difficulty']}), ρ = {best['value']:.3f}."
    )


def _bars(ax, rows: pd.DataFrame, groups: list[str], group_column: str) -> None:
    """One bar per estimator and group; a group without rows in this panel (e.g. a difficulty the fine-tuned
    model is not retrained on) gets no bar and no legend entry, and each group keeps its colour in every panel."""
    shown = _sorted(rows["estimator"].unique())
    present = [(i, group) for i, group in enumerate(groups) if (rows[group_column] == group).any()]
    width = 0.8 / max(len(present), 1)
    for j, (i, group) in enumerate(present):
        part = rows[rows[group_column] == group].set_index("estimator").reindex(shown)
        ax.bar(
            np.arange(len(shown)) + (j - (len(present) - 1) / 2) * width,
            part["value"].fillna(0),
            width,
            yerr=_errorbars(part.reset_index()),
            capsize=2,
            label=group,
            color=f"C{i}",
        )
    ax.set_xticks(np.arange(len(shown)), shown, rotation=30)


def _models(rows: pd.DataFrame) -> list[str]:
    return sorted(rows["model"].unique(), key=lambda m: (m != "tiny", m))


MODEL_TITLES = {"tiny": "tiny model, retrained from scratch", "finetuned": "fine-tuned model, fine-tuned again"}


def _best(rows: pd.DataFrame, unit: str = "") -> str:
    return "; ".join(
        f"{m}, {d}: {g.sort_values('value').iloc[-1]['estimator']} ({g['value'].max():.3f}{unit})"
        for (m, d), g in rows.groupby(["model", "difficulty"])
    )


def plot_lds(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Mean LDS per estimator with its interval, one bar per difficulty, one panel per model."""
    rows = table[(table["measure"] == "lds") & (table["variant"] == "all")]
    models = _models(rows)
    with figure_axes(path, ncols=max(len(models), 1), size=(6.4 * max(len(models), 1), 4.0)) as (fig, axes):
        for ax, model in zip(axes, models):
            _bars(ax, rows[rows["model"] == model], _difficulties(rows), "difficulty")
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_xlabel("estimator")
            ax.set_ylabel("LDS (mean Spearman ρ over queries)")
            ax.set_title(f"Linear datamodeling score, {MODEL_TITLES.get(model, model)}", fontsize=9)
            ax.legend(title="difficulty", fontsize=7)
    return (
        "Linear datamodeling score: for each query, Spearman's ρ between the predicted effect of a random subset "
        "of the training corpus (the sum of its documents' scores) and the measured log-probability of the "
        "completion after retraining on that subset (the tiny model from scratch; the fine-tuned model fine-tuned "
        "again from the base checkpoint with the same recipe); bars are the mean over queries and seeds with 95% "
        f"bootstrap intervals over facts, per difficulty and model. Best: {_best(rows)}. "
        "0 is a random predictor, 1 a perfect one."
    )


def plot_qld(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """QLD per estimator and difficulty (beyond random removals), and the raw loss rise with `random` itself,
    one pair of panels per model."""
    difficulties = _difficulties(table)
    shown = table[table["measure"].isin(["qld", "qld_raw"]) & (table["variant"] == "all")]
    panels = [(model, measure) for model in _models(shown) for measure in ("qld", "qld_raw")]
    labels = {
        "qld": "QLD: loss rise beyond k random removals (nats)",
        "qld_raw": "loss rise over the full model (nats)",
    }
    with figure_axes(path, ncols=max(len(panels), 1), size=(6.0 * max(len(panels), 1), 4.2)) as (fig, axes):
        for ax, (model, measure) in zip(axes, panels):
            _bars(ax, shown[(shown["measure"] == measure) & (shown["model"] == model)], difficulties, "difficulty")
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_xlabel("method whose top-k documents are removed")
            ax.set_ylabel(labels[measure])
            ax.set_title(MODEL_TITLES.get(model, model), fontsize=9)
            ax.legend(title="difficulty", fontsize=7)
        fig.suptitle("Counterfactual test: retrain without each method's top-k proponents")
    rows = shown[shown["measure"] == "qld"]
    return (
        "QLD: for each query, the model is retrained without the k documents a method scores highest (the tiny model "
        "from scratch; the fine-tuned model fine-tuned again from the base checkpoint with the same recipe), and "
        "the query loss −log p(completion | prompt) is measured; left of each pair, minus the mean loss after "
        "removing k random documents (several random controls), right, minus the full model's loss (with `random` "
        f"itself). Bars: mean over queries and seeds with 95% bootstrap intervals over facts, per difficulty. "
        f"Best: {_best(rows, ' nats')}."
    )


def plot_fact_tracing(table: pd.DataFrame, path: str | os.PathLike, k: int) -> str:
    """recall@k of the planted documents per estimator and query variant, one panel per difficulty and model
    (MRR is in the table)."""
    measure = f"recall_at_{k}"
    rows = table[table["measure"] == measure]
    panels = [(d, m) for d in _difficulties(rows) for m in sorted(rows["model"].unique())]
    variants = list(dict.fromkeys(rows["variant"]))
    lines = []
    with figure_axes(path, ncols=len(panels), size=(6.0 * len(panels), 4.2)) as (fig, axes):
        for ax, (difficulty, model) in zip(axes, panels):
            chosen = rows[(rows["model"] == model) & (rows["difficulty"] == difficulty)]
            _bars(ax, chosen, variants, "variant")
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("estimator")
            ax.set_ylabel(f"recall@{k}")
            ax.set_title(f"{difficulty} corpus, {model} model")
            overall = chosen[chosen["variant"] == "all"]
            if len(overall):
                best = overall.sort_values("value", ascending=False).iloc[0]
                lines.append(f"{difficulty}/{model}: best recall@{k} {best['estimator']} ({best['value']:.2f})")
        axes[0].legend(title="query variant", fontsize=7)
    return (
        f"Fact tracing: recall@{k} of the documents that state each query's planted fact, per estimator and query "
        "variant (original wording, paraphrase, French translation, flipped order), per difficulty and model, with "
        f"95% bootstrap intervals over facts (queries and seeds pooled). {'; '.join(lines)}."
    )


DIFFICULTY_MARKERS = {"easy": "", "hard": "x"}  # the steps figure's lines: colour damping, style Fisher, marker corpus


def plot_steps(summary: pd.DataFrame, path: str | os.PathLike) -> str:
    """Spearman ρ and relative error of ekfac_cg (one pair of panels per CG preconditioner) and ekfac_astra (its own
    pair, preconditioner "astra", against the exact Gauss-Newton solve) against the exact influence vs steps, one line
    per damping."""
    dampings = sorted(summary["damping"].unique())
    colours = dict(zip(dampings, [f"C{i}" for i in range(len(dampings))]))
    preconditioners = sorted(summary["preconditioner"].unique())
    panels = [(p, m) for p in preconditioners for m in ("spearman", "relative_error")]
    labels = {"spearman": "Spearman ρ with exact influence", "relative_error": "relative error ‖s − s*‖ / ‖s*‖"}
    with figure_axes(path, ncols=len(panels), size=(4.5 * len(panels), 4.0)) as (fig, axes):
        for ax, (preconditioner, measure) in zip(axes, panels):
            rows = summary[(summary["measure"] == measure) & (summary["preconditioner"] == preconditioner)]
            for (difficulty, fisher, damping), group in rows.groupby(["difficulty", "fisher", "damping"]):
                group = group.sort_values("steps")
                style = "-" if fisher == "true" else "--"
                label = f"{difficulty}, λ = {damping:g} ({fisher} Fisher)"
                marker = DIFFICULTY_MARKERS.get(difficulty, "")
                ax.plot(
                    group["steps"],
                    group["value"],
                    color=colours[damping],
                    linestyle=style,
                    marker=marker,
                    markevery=max(1, len(group) // 8),
                    label=label,
                )
                ax.fill_between(group["steps"], group["ci_low"], group["ci_high"], color=colours[damping], alpha=0.12)
            solver = "ASTRA" if preconditioner == "astra" else "CG"
            ax.set_xlabel(f"{solver} steps from the EK-FAC solution")
            ax.set_ylabel(labels[measure])
            title = (
                "EK-FAC + ASTRA (EK-FAC-preconditioned SGD), vs the Gauss-Newton solve"
                if solver == "ASTRA"
                else f"EK-FAC + CG, preconditioner: {preconditioner}"
            )
            ax.set_title(title, fontsize=9)
            if measure == "relative_error":
                ax.set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle("EK-FAC + CG and EK-FAC + ASTRA on the tiny model: accuracy against steps")
    rho = summary[summary["measure"] == "spearman"]
    parts = []
    for (difficulty, preconditioner, fisher, damping), line in rho.groupby(
        ["difficulty", "preconditioner", "fisher", "damping"]
    ):
        line = line.set_index("steps")["value"]
        reach = line[line >= 0.9]
        first = f"ρ ≥ 0.9 from step {int(reach.index.min())}" if len(reach) else "ρ < 0.9 at every step"
        parts.append(
            f"{difficulty}, {'ASTRA' if preconditioner == 'astra' else preconditioner + '-preconditioned CG'}, {fisher} "
            f"Fisher, λ = {damping:g}: ρ = {line.iloc[0]:.3f} at step 0 "
            f"(EK-FAC), {line.iloc[-1]:.3f} after {int(line.index.max())} steps, {first}"
        )
    return (
        "Spearman ρ and relative error of EK-FAC + CG's and EK-FAC + ASTRA's influence against the exact influence on "
        "the tiny model after each step from the EK-FAC solution (CG with the damped EK-FAC inverse as preconditioner "
        "and without one, against the exact one-draw Fisher solve it converges to; ASTRA's stochastic steps on "
        "minibatches with exact Gauss-Newton products, against the exact solve with the whole set's Gauss-Newton "
        "Hessian); solid: true Fisher, dashed: empirical; mean over queries with 95% t intervals. "
        + "; ".join(parts)
        + "."
    )


def plot_subsets(summary: pd.DataFrame, path: str | os.PathLike) -> str:
    """Spearman ρ and relative error of ekfac_cg against the exact influence vs the refinement set's size."""
    labels = {"spearman": "Spearman ρ with exact influence", "relative_error": "relative error ‖s − s*‖ / ‖s*‖"}
    parts = []
    with figure_axes(path, ncols=2, size=(9.0, 4.0)) as (fig, axes):
        for ax, measure in zip(axes, ("spearman", "relative_error")):
            chosen = summary[summary["measure"] == measure]
            for i, ((difficulty, fisher), group) in enumerate(chosen.groupby(["difficulty", "fisher"])):
                group = group.sort_values("n_sequences")
                style = "-o" if fisher == "true" else "--o"
                label = f"{difficulty}, {fisher} Fisher"
                ax.plot(group["n_sequences"], group["value"], style, color=f"C{i}", label=label)
                ax.fill_between(group["n_sequences"], group["ci_low"], group["ci_high"], color=f"C{i}", alpha=0.12)
                if measure == "spearman":
                    values = ", ".join(f"{n}: {v:.3f}" for n, v in zip(group["n_sequences"], group["value"]))
                    parts.append(f"{label}, ρ by set size {values}")
            ax.set_xscale("log")
            ax.set_xlabel("refinement set (sequences, log scale)")
            ax.set_ylabel(labels[measure])
            if measure == "relative_error":
                ax.set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle("EK-FAC + CG on the tiny model: accuracy against the refinement set's size")
    steps = ", ".join(str(s) for s in sorted(summary["steps"].unique()))
    dampings = ", ".join(f"{d:g}" for d in sorted(summary["damping"].unique()))
    return (
        "Spearman ρ and relative error of EK-FAC + CG's influence against the exact influence on the tiny model when "
        "CG refines on a subset of the exact reference's fitting set (its first batches; the largest point is the "
        f"whole set), after {steps} CG steps at λ = {dampings} relative; mean over queries with 95% t intervals. "
        + "; ".join(parts)
        + "."
    )
