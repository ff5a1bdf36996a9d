"""The engine's front door: fit EK-FAC factors in memory and precondition queries with any registry estimator.

Every caller that fits factors on a batch list (the evaluation, benchmarks, tests) calls `fit_ekfac`, and
every caller that preconditions queries calls `precondition`, which reads the estimator's registry row and
dispatches to the plain solver (`precondition.precondition_queries`: EK-FAC, K-FAC, identity, cosine, unit-normalised
EK-FAC) or to a refined one (`refine.refine_queries`: EK-FAC-preconditioned CG on a refinement set;
`astra.astra_queries`: EK-FAC-preconditioned stochastic steps on minibatches of a corpus pool). The workflow's rules
fit the same factors in shards on disk (`factors.py`, `artefacts.py`); the chain is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from . import estimators
from .astra import Astra, astra_queries
from .batching import MAX_TOKENS
from .containers import FactorSums, Preconditioned
from .eigen import eigendecompose
from .factors import fit_covariance, fit_eigenvalue_correction
from .model import TrackedLayer
from .precondition import Damping, precondition_queries
from .refine import Refine, refine_queries


@dataclass
class Ekfac:
    """A fitted EK-FAC: the covariance sums, their eigendecomposition and the eigenvalue correction."""

    covariance: FactorSums
    eigen: dict[str, dict[str, torch.Tensor]]
    correction: FactorSums

    def curvature(self) -> dict:
        """The keywords `precondition` takes for these factors."""
        return {"eigen": self.eigen, "correction": self.correction}


def fit_ekfac(
    model,
    layers: dict[str, TrackedLayer],
    batches: Sequence[dict],
    fisher: str = "true",
    seed: int = 0,
    *,
    correction_seed: int | None = None,
    dtype=torch.float32,
    eigen_dtype: str = "float64",
    progress: bool = True,
    max_tokens: int | str | None = MAX_TOKENS,
) -> Ekfac:
    """Covariance → eigendecomposition → eigenvalue correction over the same `batches`.

    Labels per `fisher` ("true": sampled from the model, seeded per batch; "empirical": the data's own);
    the correction draws its labels with `correction_seed` (default `seed + 1`, as the workflow does).
    """
    options = dict(dtype=dtype, progress=progress, max_tokens=max_tokens)
    covariance = fit_covariance(model, layers, batches, fisher, seed, **options)
    eigen = eigendecompose(covariance, progress=progress, dtype=eigen_dtype)
    correction_seed = seed + 1 if correction_seed is None else correction_seed
    correction = fit_eigenvalue_correction(model, layers, eigen, batches, fisher, correction_seed, **options)
    return Ekfac(covariance, eigen, correction)


@dataclass(frozen=True)
class Refinement:
    """What a refining estimator iterates over: its sequences' batches (ekfac_cg: the refinement set; ekfac_astra:
    the pool its minibatches are drawn from), the solver's settings (`Refine` or `Astra`), ekfac_cg's Fisher labels
    (`seed`: its label seed, the covariance's fitting seed, so with the fitting sample F has the factors' labels;
    ekfac_astra's exact Gauss-Newton products draw none), and the damping the refinement solves at (None: the
    estimator's `damping`)."""

    batches: Sequence[dict] = field(default_factory=list)
    settings: Refine | Astra = Refine()
    fisher: str = "true"
    seed: int = 0
    damping: Damping | None = None


def precondition(
    model,
    layers: dict[str, TrackedLayer],
    query_ids: list[str],
    query_batches: Sequence[dict],
    *,
    estimator: str = "ekfac",
    damping: Damping = Damping(),
    rank: int | None = None,
    eigen: dict | None = None,
    correction: FactorSums | None = None,
    tokens_per_sequence: float | None = None,
    refinement: Refinement | None = None,
    dtype=torch.float32,
    progress: bool = True,
    logger: logging.Logger | None = None,
) -> Preconditioned:
    """Any registry estimator's preconditioned queries: (G + λI)⁻¹ ∇f_q, rank-r per layer if `rank`.

    Refining estimators (registry `refines`) need `refinement`; the others ignore it.
    """
    if not estimators.get(estimator).refines:
        return precondition_queries(
            model,
            layers,
            query_ids,
            query_batches,
            estimator=estimator,
            eigen=eigen,
            correction=correction,
            damping=damping,
            rank=rank,
            dtype=dtype,
            progress=progress,
            tokens_per_sequence=tokens_per_sequence,
        )
    kind = estimators.get(estimator).refines
    expected = {"cg": Refine, "astra": Astra}[kind]
    if refinement is None or not isinstance(refinement.settings, expected):
        raise ValueError(
            f"estimator {estimator!r} refines on corpus sequences: pass a `refinement` with {expected.__name__} settings."
        )
    damping = refinement.damping or damping
    options = dict(rank=rank, dtype=dtype, progress=progress, logger=logger)
    args = (model, layers, query_ids, query_batches, refinement.batches, eigen, correction, damping)
    if kind == "astra":
        return astra_queries(*args, refinement.settings, **options)  # exact Gauss-Newton: no labels drawn
    return refine_queries(*args, refinement.settings, refinement.fisher, refinement.seed, **options)
