"""Exact influence on a tiny model, and how close EK-FAC, K-FAC, identity and LiSSA come to it.

The damped Fisher over all tracked parameters (not block-diagonal), F = Σ_n vec(G_n) vec(G_n)ᵀ / N
with G_n the per-sequence gradients of the fitting sequences, is inverted exactly through the thin
SVD of the (N, P) gradient matrix J = U s Vᵀ:
    (F + λI)⁻¹ v = V diag(1 / (s²/N + λ)) Vᵀ v + (v − V Vᵀ v) / λ,
equal to a dense solve (tested) at O(N²P) cost. The true Fisher's labels are sampled with the
engine's seeded generator, so the exact Fisher and the EK-FAC factors see the same samples:
the comparison isolates the Kronecker/eigenbasis approximation, not label noise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..engine import names
from ..engine.api import fit_ekfac, precondition
from ..engine.factors import fit_factor_sums
from ..engine.ggn import GaussNewton
from ..engine.hooks import per_sequence_gradients
from ..engine.precondition import Damping, query_gradients
from ..stats import spearman
from .baselines import lissa
from .ihvp_steps import PRECONDITIONERS, astra_scores_by_step, headline, scores_by_step

log = logging.getLogger(__name__)


def _flatten(grads: dict[str, torch.Tensor], layers) -> torch.Tensor:
    return torch.cat([grads[name].flatten(1) for name in layers], dim=1)  # (B, P)


def fitting_gradients(model, layers, batches: Sequence[dict], fisher: str, seed: int) -> torch.Tensor:
    """(N, P) float64 per-sequence gradients with the labels `fit_covariance(..., seed)` samples."""
    parts: dict[str, list] = {name: [] for name in layers}

    def consumer_for(state):
        def on_pair(name, a, g):
            parts[name].append(g.transpose(1, 2) @ a)  # (B, d_out, d_in)

        return on_pair

    fit_factor_sums(
        model,
        layers,
        batches,
        consumer_for,
        fisher=fisher,
        seed=seed,
        dtype=torch.float64,
        desc="exact Fisher gradients",
        progress=False,
        max_tokens=None,
    )
    return _flatten({name: torch.cat(p) for name, p in parts.items()}, layers)


def candidate_gradients(model, layers, batches: Sequence[dict]) -> torch.Tensor:
    """(N, P) float64 gradients of each candidate's summed loss (its own labels)."""
    return torch.cat([_flatten(per_sequence_gradients(model, layers, b, torch.float64), layers) for b in batches])


def query_gradient_matrix(model, layers, batches: Sequence[dict]) -> torch.Tensor:
    """(Q, P) float64 gradients of each query's completion loss."""
    return torch.cat([_flatten(query_gradients(model, layers, b, None, torch.float64), layers) for b in batches])


class ExactFisher:
    """F = JᵀJ / N for J (N, P), solved exactly through its thin SVD."""

    def __init__(self, jacobian: torch.Tensor):
        self.n = jacobian.shape[0]
        self.jacobian = jacobian
        _, s, vh = torch.linalg.svd(jacobian, full_matrices=False)
        self.eigenvalues, self.basis = s.square() / self.n, vh.T  # (r,), (P, r)

    @property
    def mean_eigenvalue(self) -> float:
        """tr(F) / P: the scale relative damping is measured in."""
        return float(self.eigenvalues.sum()) / self.jacobian.shape[1]

    def solve(self, v: torch.Tensor, damping: float) -> torch.Tensor:
        """(F + λI)⁻¹ v for the columns of v (P, K)."""
        coeff = self.basis.T @ v  # (r, K)
        return self.basis @ (coeff / (self.eigenvalues + damping)[:, None]) + (v - self.basis @ coeff) / damping

    def fvp(self, batch_size: int):
        """Mini-batch Fisher-vector products J_bᵀ J_b h / b on random rows, for LiSSA."""

        def product(h: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
            rows = self.jacobian[rng.choice(self.n, size=min(batch_size, self.n), replace=False)]  # (b, P)
            return rows.T @ (rows @ h) / len(rows)

        return product

    def lissa_scale(self, damping: float) -> float:
        """1.1 × (max_n ‖g_n‖² + λ): bounds every mini-batch Fisher's top eigenvalue, so LiSSA never diverges."""
        return 1.1 * (float(self.jacobian.square().sum(1).max()) + damping)


class ExactGaussNewton:
    """G, the mean exact Gauss-Newton Hessian (P, P) of every pool sequence (the true Fisher's expectation over
    labels: no label draw), dense, built column block by column block from `GaussNewton` products with unit
    vectors (P tangent passes over the pool), and solved exactly by a Cholesky factorisation: the fixed point
    ekfac_astra's minibatch iteration targets. Dense, so for the evaluation's tiny models only (P ≤ MAX_DENSE)."""

    MAX_DENSE = 32768  # 8 GB of float64

    def __init__(self, model, layers, batches, block: int = 256, progress: bool = False, logger=None):
        logger = logger or log
        sizes = {name: layer.d_out * layer.d_in_total for name, layer in layers.items()}
        total = sum(sizes.values())
        if total > self.MAX_DENSE:
            raise ValueError(
                f"the exact Gauss-Newton reference is a dense ({total}, {total}) matrix: above {self.MAX_DENSE} "
                "parameters it does not fit; the iHVP accuracy is for the evaluation's tiny models."
            )
        product = GaussNewton(model, layers, None)
        blocks = range(0, total, block)
        log.info(
            "exact Gauss-Newton reference: %d parameters, %d blocks of %d tangent passes", total, len(blocks), block
        )
        columns = []
        for i, start in enumerate(blocks):
            rows = torch.arange(start, min(start + block, total))
            eye = torch.zeros(len(rows), total, dtype=torch.float64)
            eye[torch.arange(len(rows)), rows] = 1.0  # (b, P) unit vectors, without a (P, P) identity
            units, offset = {}, 0
            for name, layer in layers.items():
                units[name] = eye[:, offset : offset + sizes[name]].reshape(-1, layer.d_out, layer.d_in_total)
                offset += sizes[name]
            columns.append(_flatten(product.mean(batches, units), layers))  # (b, P): rows of the symmetric G
            if progress or i % 8 == 7:
                logger.info("exact Gauss-Newton reference: block %d of %d", i + 1, len(blocks))
        hessian = torch.cat(columns)
        self.hessian = (hessian + hessian.T) / 2

    def solve(self, v: torch.Tensor, damping: float) -> torch.Tensor:
        """(G + λI)⁻¹ v for the columns of v (P, K), by a Cholesky factorisation (G is positive semi-definite)."""
        factor = torch.linalg.cholesky(self.hessian + damping * torch.eye(self.hessian.shape[0], dtype=torch.float64))
        return torch.cholesky_solve(v, factor)


def approximate_scores(
    model,
    layers,
    query_batches,
    query_ids,
    queries: torch.Tensor,
    candidates: torch.Tensor,
    exact: ExactFisher,
    damping: float,
    seed: int,
    lissa_settings: dict,
    factors: tuple,
) -> dict[str, torch.Tensor]:
    """(Q, N) scores of every estimator (and the block-diagonal exact reference) at absolute damping λ;
    `factors` = (eigen, correction)."""
    eigen, correction = factors
    out = {}
    for estimator in ("ekfac", "kfac"):
        pre = precondition(
            model,
            layers,
            query_ids,
            query_batches,
            estimator=estimator,
            eigen=eigen,
            correction=correction,
            damping=Damping("absolute", damping),
            rank=None,
            dtype=torch.float64,
            progress=False,
        )
        out[estimator] = _flatten({m: f[names.PRECONDITIONED] for m, f in pre.layers.items()}, layers) @ candidates.T
    out["identity"] = queries @ candidates.T / damping
    solved = lissa(
        exact.fvp(lissa_settings["batch_size"]),
        queries.T,
        damping,
        exact.lissa_scale(damping),
        lissa_settings["depth"],
        seed,
    )  # (P, Q)
    out["lissa"] = solved.T @ candidates.T
    out["block_exact"] = block_exact_solve(exact.jacobian, queries, layers, damping) @ candidates.T
    return out


def block_exact_solve(jacobian: torch.Tensor, queries: torch.Tensor, layers, damping: float) -> torch.Tensor:
    """(Q, P) queries times the exact inverse of the block-diagonal damped Fisher (one block per layer):
    what EK-FAC would reach with no Kronecker/eigenbasis error, so the gap to the exact influence splits
    into the cross-layer part and the Kronecker part."""
    parts, start = [], 0
    for layer in layers.values():
        end = start + layer.d_out * layer.d_in_total
        parts.append(ExactFisher(jacobian[:, start:end]).solve(queries[:, start:end].T, damping).T)  # (Q, P_l)
        start = end
    return torch.cat(parts, dim=1)


def ihvp_accuracy(
    model,
    layers,
    fit_batches,
    query_batches,
    query_ids,
    candidate_batches,
    dampings,
    fishers,
    seed: int,
    lissa_settings: dict,
    refine: dict | None = None,
    subset_fractions: Sequence[float] = (),
    subset_damping: float | None = None,
    astra: dict | None = None,
    logger: logging.Logger | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(accuracy, accuracy of ekfac_cg by CG step, accuracy of ekfac_cg by refinement-set size), long tables;
    the exact Gauss-Newton reference and ekfac_astra log their progress to `logger`.

    accuracy: fisher, damping (relative to tr F / P), estimator, query_id, spearman, relative_error;
    relative_error is per query: ‖s_q − s*_q‖ / ‖s*_q‖ over the candidates, s* the exact scores.
    by step: the same columns with estimator ekfac_cg, plus preconditioner (ekfac, none), steps and
    relative_residual (‖b − (F + λI)x‖ / ‖b‖). ekfac_cg refines on the exact reference's fitting set and
    labels; `refine`: steps and preconditioner (its accuracy row), tolerance, block_diagonal, record_steps
    (the steps table's extent). by set size: at relative damping `subset_damping`, ekfac_cg (configured steps
    and preconditioner) refined on the first `fraction` of the fitting batches (the subset's own Fisher),
    against the same exact reference; columns fisher, damping, fraction, n_sequences, steps, query_id,
    spearman, relative_error, with fraction 1 the accuracy table's ekfac_cg row. `astra` (scoring.astra's
    settings): ekfac_astra on minibatches of the fitting set, its last step the accuracy row, every step in the
    by-step table (preconditioner "astra"); its reference is not the one-draw Fisher's but the exact solve with the
    fitting set's Gauss-Newton Hessian (`ExactGaussNewton`), the curvature ASTRA converges to, so its step 0 is
    EK-FAC against that reference.
    """
    candidates = candidate_gradients(model, layers, candidate_batches)  # (N, P)
    queries = query_gradient_matrix(model, layers, query_batches)  # (Q, P)
    rows, step_rows, subset_rows = [], [], []
    gauss_newton = None  # label-free: one for every Fisher and damping
    for fisher in fishers:
        exact = ExactFisher(fitting_gradients(model, layers, fit_batches, fisher, seed))
        ekfac = fit_ekfac(
            model,
            layers,
            fit_batches,
            fisher,
            seed,
            correction_seed=seed,
            dtype=torch.float64,
            progress=False,
            max_tokens=None,
        )
        eigen, correction = ekfac.eigen, ekfac.correction
        for relative in tqdm(dampings, desc=f"iHVP accuracy ({fisher} Fisher)", unit="damping"):
            damping = relative * exact.mean_eigenvalue
            truth = exact.solve(queries.T, damping).T @ candidates.T  # (Q, N)
            approx = approximate_scores(
                model,
                layers,
                query_batches,
                query_ids,
                queries,
                candidates,
                exact,
                damping,
                seed,
                lissa_settings,
                (eigen, correction),
            )
            key = {"fisher": fisher, "damping": relative}
            steps, preconditioner = headline(refine)
            for kind in PRECONDITIONERS:
                by_step, residuals = scores_by_step(
                    model,
                    layers,
                    query_batches,
                    query_ids,
                    candidates,
                    fit_batches,
                    (eigen, correction),
                    damping,
                    fisher,
                    seed,
                    refine,
                    kind,
                )
                if kind == preconditioner:
                    approx["ekfac_cg"] = by_step[steps]
                    if relative == subset_damping:
                        extra = {**key, "fraction": 1.0, "n_sequences": _sequences_in(fit_batches), "steps": steps}
                        subset_rows += _accuracy_rows(by_step[steps], truth, query_ids, extra)
                step_rows += _step_rows(by_step, residuals, truth, query_ids, {**key, "estimator": "ekfac_cg"}, kind)
            if astra is not None:  # against the pool's exact Gauss-Newton solve, the curvature it targets
                gauss_newton = gauss_newton or ExactGaussNewton(model, layers, fit_batches, logger=logger)
                reference = gauss_newton.solve(queries.T, damping).T @ candidates.T
                by_step, residuals = astra_scores_by_step(
                    model,
                    layers,
                    query_batches,
                    query_ids,
                    candidates,
                    fit_batches,
                    (eigen, correction),
                    damping,
                    astra,
                    logger,
                )
                rows += _accuracy_rows(by_step[max(by_step)], reference, query_ids, {**key, "estimator": "ekfac_astra"})
                step_rows += _step_rows(
                    by_step, residuals, reference, query_ids, {**key, "estimator": "ekfac_astra"}, "astra"
                )
            for estimator, scores in approx.items():
                rows += _accuracy_rows(scores, truth, query_ids, {**key, "estimator": estimator})
            for fraction in sorted(subset_fractions) if relative == subset_damping else ():
                if fraction >= 1:
                    continue  # the full set: recorded above
                subset = fit_batches[: max(1, round(fraction * len(fit_batches)))]
                by_step, _ = scores_by_step(
                    model,
                    layers,
                    query_batches,
                    query_ids,
                    candidates,
                    subset,
                    (eigen, correction),
                    damping,
                    fisher,
                    seed,
                    {**(refine or {}), "record_steps": 0},
                    preconditioner,
                )
                extra = {**key, "fraction": fraction, "n_sequences": _sequences_in(subset), "steps": steps}
                subset_rows += _accuracy_rows(by_step[steps], truth, query_ids, extra)
    return pd.DataFrame(rows), pd.DataFrame(step_rows), pd.DataFrame(subset_rows)


def _step_rows(by_step: dict, residuals: dict, truth, query_ids, key: dict, preconditioner: str) -> list[dict]:
    """The by-step table's rows: `_accuracy_rows` of every step's scores with its step and relative residual."""
    rows = []
    for step, scores in by_step.items():
        extra = {**key, "preconditioner": preconditioner, "steps": step}
        for row, residual in zip(_accuracy_rows(scores, truth, query_ids, extra), residuals[step]):
            rows.append({**row, "relative_residual": float(residual)})
    return rows


def _sequences_in(batches) -> int:
    return sum(int(b["input_ids"].shape[0]) for b in batches)


def _accuracy_rows(scores: torch.Tensor, truth: torch.Tensor, query_ids, key: dict) -> list[dict]:
    """One row per query: `key`, query_id, Spearman ρ and relative error of (Q, N) scores against the truth."""
    error = (scores - truth).norm(dim=1) / truth.norm(dim=1).clamp(min=1e-300)
    return [
        {
            **key,
            "query_id": query_id,
            "spearman": spearman(scores[q].numpy(), truth[q].numpy()),
            "relative_error": float(error[q]),
        }
        for q, query_id in enumerate(query_ids)
    ]
