"""ekfac_cg and ekfac_astra in the iHVP-accuracy evaluation: the scores of every iterate, so accuracy can be read
against steps.

ekfac_cg's refinement set is the exact reference's fitting set with its labels (`seed` is the one the exact
Fisher's labels are sampled with), so CG converges to the exact influence and the curve shows how fast.
ekfac_astra draws its minibatches from the same set (the whole corpus here) and multiplies by their exact
Gauss-Newton Hessian, so it targets the set's Gauss-Newton solve (its reference; the one-draw exact Fisher is an
estimate of that Hessian).
"""

from __future__ import annotations

import pandas as pd
import torch

from ..engine.astra import Astra, astra_queries
from ..engine.precondition import Damping
from ..engine.refine import PRECONDITIONERS, Refine, refine_queries
from ..stats import t_interval

__all__ = [
    "PRECONDITIONERS",
    "headline",
    "scores_by_step",
    "tables_of_cells",
    "summarise_steps",
    "summarise_subsets",
]
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


def astra_scores_by_step(
    model,
    layers,
    query_batches,
    query_ids,
    candidates: torch.Tensor,
    pool_batches,
    factors: tuple,
    damping: float,
    settings: dict | None = None,
    logger=None,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """({step: (Q, N) scores}, {step: (Q,) relative minibatch residual}) of ekfac_astra (scoring.astra's settings)
    at absolute damping λ, float64; step 0 is EK-FAC (its residual NaN: no minibatch seen yet)."""
    eigen, correction = factors
    scores, residuals = {}, {}

    def keep(step, iterate, residual):
        flat = torch.cat([iterate[name].flatten(1) for name in layers], dim=1)  # (Q, P)
        scores[step] = flat @ candidates.T
        residuals[step] = residual if residual is not None else torch.full((len(query_ids),), float("nan"))

    astra_queries(
        model,
        layers,
        query_ids,
        query_batches,
        pool_batches,
        eigen,
        correction,
        Damping("absolute", damping),
        Astra.from_settings(settings or {}),
        None,
        torch.float64,
        max_tokens=None,
        progress=False,
        logger=logger,
        callback=keep,
    )
    return scores, residuals


def headline(settings: dict | None) -> tuple[int, str]:
    """The step and preconditioner whose scores are the ekfac_cg row of the accuracy table: the configured ones."""
    refine = refine_settings(settings)[0]
    return refine.steps, refine.preconditioner


STEPS_COLUMNS = {
    "difficulty": "planted corpus (easy or hard)",
    "fisher": "true (labels sampled from the model) or empirical (the data's labels)",
    "damping": "λ relative to the exact Fisher's mean eigenvalue tr(F)/P",
    "preconditioner": "ekfac_cg's preconditioner: ekfac (damped EK-FAC inverse) or none (1/λ: plain CG); astra: "
    "ekfac_astra's EK-FAC-preconditioned stochastic steps",
    "steps": "CG or ASTRA steps from the EK-FAC solution (0 = EK-FAC)",
    "measure": "spearman (ρ with the exact scores), relative_error (‖s − s*‖/‖s*‖) or relative_residual "
    "(ASTRA: the step's minibatch residual)",
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


def tables_of_cells(tables: list[pd.DataFrame], cells) -> pd.DataFrame:
    """The per-cell tables (one per [difficulty, seed] of `eval_cells`, in order) as one, with both as columns."""
    if len(tables) != len(cells):
        raise ValueError(f"{len(tables)} tables for {len(cells)} (difficulty, seed) cells.")
    parts = [t.assign(difficulty=d, seed=s) for t, (d, s) in zip(tables, cells)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
