"""ekfac_cg in the iHVP-accuracy evaluation: the scores of every CG iterate, so accuracy can be read against steps.

The refinement set is the exact reference's fitting set with its labels (`seed` is the one the exact Fisher's
labels are sampled with), so CG converges to the exact influence and the curve shows how fast.
"""

from __future__ import annotations

import os

import pandas as pd
import torch

from ..engine.precondition import Damping
from ..engine.refine import PRECONDITIONERS, Refine, refine_queries
from ..figures import figure_axes
from ..stats import t_interval

__all__ = [
    "PRECONDITIONERS",
    "headline",
    "plot_steps",
    "plot_subsets",
    "scores_by_step",
    "tables_of_cells",
    "summarise_steps",
    "summarise_subsets",
]
DIFFICULTY_MARKERS = {"easy": "", "hard": "x"}  # the steps figure's lines: colour damping, style Fisher, marker corpus
# The steps the accuracy-vs-steps table records by default: 0 (= EK-FAC) up to this many.
RECORD_STEPS = 30


def refine_settings(settings: dict | None) -> tuple[Refine, int]:
    """(CG settings, steps recorded) from evaluation.ihvp.refine-like settings (steps, tolerance, record_steps)."""
    settings = dict(settings or {})
    record = int(settings.pop("record_steps", RECORD_STEPS))
    refine = Refine.from_settings(settings)
    return refine, max(record, refine.steps)


def scores_by_step(
    model,
    layers,
    query_batches,
    query_ids,
    candidates: torch.Tensor,
    fit_batches,
    factors: tuple,
    damping: float,
    fisher: str,
    seed: int,
    settings: dict | None = None,
    preconditioner: str | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """({step: (Q, N) scores}, {step: (Q,) relative residual}) of ekfac_cg at absolute damping λ, float64.

    Step 0 is EK-FAC. A query that met the tolerance keeps its iterate; the recorded steps stop when every
    query has (later steps equal the last recorded one).
    """
    refine, record = refine_settings(settings)
    preconditioner = preconditioner or refine.preconditioner
    eigen, correction = factors
    scores, residuals = {}, {}

    def keep(step, iterate, residual):
        flat = torch.cat([iterate[name].flatten(1) for name in layers], dim=1)  # (Q, P)
        scores[step], residuals[step] = flat @ candidates.T, residual.max(1).values

    solved = refine_queries(
        model,
        layers,
        query_ids,
        query_batches,
        fit_batches,
        eigen,
        correction,
        Damping("absolute", damping),
        Refine(record, refine.tolerance, refine.block_diagonal, refine.cache_bytes, preconditioner=preconditioner),
        fisher,
        seed,
        None,
        torch.float64,
        max_tokens=None,  # the exact reference's micro-batching, hence its label draws
        progress=False,
        callback=keep,
    )
    if not scores:  # 0 steps: no iterate was reported
        flat = torch.cat([solved.layers[name]["preconditioned"].flatten(1) for name in layers], dim=1)
        scores[0], residuals[0] = flat @ candidates.T, torch.full((len(query_ids),), float("nan"))
    last = max(scores)
    for step in range(last + 1, record + 1):
        scores[step], residuals[step] = scores[last], residuals[last]
    return scores, residuals


def headline(settings: dict | None) -> tuple[int, str]:
    """The step and preconditioner whose scores are the ekfac_cg row of the accuracy table: the configured ones."""
    refine = refine_settings(settings)[0]
    return refine.steps, refine.preconditioner


STEPS_COLUMNS = {
    "difficulty": "planted corpus (easy or hard)",
    "fisher": "true (labels sampled from the model) or empirical (the data's labels)",
    "damping": "λ relative to the exact Fisher's mean eigenvalue tr(F)/P",
    "preconditioner": "CG's preconditioner: ekfac (damped EK-FAC inverse) or none (1/λ: plain CG)",
    "steps": "CG steps from the EK-FAC solution (0 = EK-FAC)",
    "measure": "spearman (ρ with the exact scores), relative_error (‖s − s*‖/‖s*‖) or relative_residual",
    "value": "mean over queries (and seeds)",
    "ci_low": "lower end of the 95% Student-t interval",
    "ci_high": "upper end of the 95% Student-t interval",
    "n": "queries × seeds pooled",
}


def _summarise(table: pd.DataFrame, keys: list[str], measures: tuple[str, ...], columns: dict) -> pd.DataFrame:
    """Mean and 95% t interval of each measure per group of `keys`, in the order of `columns`."""
    rows = []
    for key, group in table.groupby(keys, sort=True):
        for measure in measures:
            mean, low, high, n = t_interval(group[measure].to_numpy())
            values = {"measure": measure, "value": mean, "ci_low": low, "ci_high": high, "n": n}
            rows.append({**dict(zip(keys, key)), **values})
    return pd.DataFrame(rows, columns=list(columns))


def summarise_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t interval of each measure per Fisher, damping, preconditioner and step (STEPS_COLUMNS)."""
    keys = ["difficulty", "fisher", "damping", "preconditioner", "steps"]
    return _summarise(steps, keys, ("spearman", "relative_error", "relative_residual"), STEPS_COLUMNS)


def plot_steps(summary: pd.DataFrame, path: str | os.PathLike) -> str:
    """Spearman ρ and relative error of ekfac_cg against the exact influence vs CG steps, one line per damping,
    one pair of panels per preconditioner."""
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
            ax.set_xlabel("CG steps from the EK-FAC solution")
            ax.set_ylabel(labels[measure])
            ax.set_title(f"preconditioner: {preconditioner}", fontsize=9)
            if measure == "relative_error":
                ax.set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle("EK-FAC + CG on the tiny model: accuracy against CG steps")
    rho = summary[summary["measure"] == "spearman"]
    parts = []
    for (difficulty, preconditioner, fisher, damping), line in rho.groupby(
        ["difficulty", "preconditioner", "fisher", "damping"]
    ):
        line = line.set_index("steps")["value"]
        reach = line[line >= 0.9]
        first = f"ρ ≥ 0.9 from step {int(reach.index.min())}" if len(reach) else "ρ < 0.9 at every step"
        parts.append(
            f"{difficulty}, {preconditioner} preconditioner, {fisher} Fisher, λ = {damping:g}: ρ = {line.iloc[0]:.3f} at step 0 "
            f"(EK-FAC), {line.iloc[-1]:.3f} after {int(line.index.max())} steps, {first}"
        )
    return (
        "Spearman ρ and relative error of EK-FAC + CG's influence against the exact influence on the tiny model "
        "after each CG step from the EK-FAC solution, with the damped EK-FAC inverse as CG's preconditioner and "
        "without one; solid: true Fisher, dashed: empirical; mean over queries with 95% t intervals. "
        + "; ".join(parts)
        + "."
    )


SUBSETS_COLUMNS = {
    "difficulty": STEPS_COLUMNS["difficulty"],
    "fisher": STEPS_COLUMNS["fisher"],
    "damping": "λ relative to the exact Fisher's mean eigenvalue (evaluation.ihvp.headline_damping)",
    "n_sequences": "sequences in the refinement set: the first evaluation.ihvp.refine_fractions of the fitting batches",
    "steps": "CG steps (scoring.refine.steps; a query stops earlier at the tolerance)",
    "measure": "spearman (ρ with the exact scores) or relative_error (‖s − s*‖/‖s*‖)",
    "value": "mean over queries (and seeds)",
    "ci_low": "lower end of the 95% Student-t interval",
    "ci_high": "upper end of the 95% Student-t interval",
    "n": "queries × seeds pooled",
}


def summarise_subsets(subsets: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t interval of ρ and relative error per Fisher, damping and refinement-set size (SUBSETS_COLUMNS)."""
    keys = ["difficulty", "fisher", "damping", "n_sequences", "steps"]
    return _summarise(subsets, keys, ("spearman", "relative_error"), SUBSETS_COLUMNS)


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


def tables_of_cells(tables: list[pd.DataFrame], cells) -> pd.DataFrame:
    """The per-cell tables (one per [difficulty, seed] of `eval_cells`, in order) as one, with both as columns."""
    if len(tables) != len(cells):
        raise ValueError(f"{len(tables)} tables for {len(cells)} (difficulty, seed) cells.")
    parts = [t.assign(difficulty=d, seed=s) for t, (d, s) in zip(tables, cells)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
