"""ekfac_cg: conjugate gradients from the EK-FAC solution on (F + λI) x_q = ∇L_q, all queries at once.

F is the curvature the factors describe, with no Kronecker approximation: the Fisher of the summed
sequence loss over every tracked parameter (cross-layer terms included),
    F v = (1/N) Σ_n g_n (g_nᵀ v),   g_nᵀ v = Σ_layers ⟨G_n^l, V^l⟩,   G_n^l = Σ_t g_t a_tᵀ,
on N refinement sequences whose labels are drawn as the factors draw them (true Fisher: the model's
samples, seeded per batch with factors.batch_seed; empirical: the data's). λ is EK-FAC's per layer
(precondition.Damping on Λ). CG starts from the EK-FAC solution, so 0 steps is `ekfac` exactly, and is
preconditioned by the damped EK-FAC inverse (`preconditioner="ekfac"`) or by 1/λ ("none": plain CG). F has
rank ≤ N, so plain CG is exact after N + 1 steps; the EK-FAC preconditioner is a Jacobi preconditioner in
the Kronecker eigenbasis, which spreads the low-rank-plus-λ spectrum and needed more steps on the
evaluation's tiny model (hence the default "none"). One product with F serves all Q queries: per group of
sequences, c (b, Q) = G_flat · V_flatᵀ summed over layers, then out += cᵀ · G_flat — two contractions as
costly as scoring the group against the queries at full rank, plus forming G when it is not cached.

The refinement set's per-sequence gradients G are kept in memory when they fit `cache_bytes`; else its
activations a and output gradients g (G formed per step); else the model is re-run every product with
the same label seeds (same F).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from . import names
from .batching import MAX_TOKENS
from .cg import Vector, conjugate_gradients
from .containers import FactorSums, Preconditioned
from .eigen import rotations_for
from .model import TrackedLayer, layer_devices
from .precondition import Damping, final_form, query_gradients
from .refinement_set import RefinementSet

PRECONDITIONERS = ("ekfac", "none")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refine:
    """CG settings: step limit, relative-residual tolerance per query, block-diagonal F, memory for the cache,
    queries per solve (each solve re-reads the refinement set every step)."""

    steps: int = 100
    tolerance: float = 1e-3
    block_diagonal: bool = False
    cache_bytes: int = 4 * 2**30
    query_chunk: int | None = None  # queries solved together (None: all); memory ≈ 6 full-rank copies of each
    # CG's preconditioner: "ekfac" (the damped EK-FAC inverse) or "none" (1/λ per layer: plain CG when λ is
    # one number). F has rank ≤ N, so plain CG is exact after N + 1 steps; EK-FAC spreads the spectrum of
    # the preconditioned operator and can need more steps (measured in the evaluation's ihvp_steps).
    preconditioner: str = "none"

    @classmethod
    def from_settings(cls, settings: dict) -> Refine:
        """From scoring.refine (cache in GB); missing keys keep the defaults."""
        cache = settings.get("cache_gb")
        return cls(
            steps=settings.get("steps", cls.steps),
            tolerance=settings.get("tolerance", cls.tolerance),
            block_diagonal=settings.get("block_diagonal", cls.block_diagonal),
            cache_bytes=cls.cache_bytes if cache is None else int(cache * 2**30),
            query_chunk=settings.get("query_chunk", cls.query_chunk),
            preconditioner=settings.get("preconditioner", cls.preconditioner),
        )

    def __post_init__(self):
        if self.steps < 0 or not self.tolerance >= 0:
            raise ValueError(f"refine steps must be ≥ 0 and tolerance ≥ 0, got {self.steps}, {self.tolerance}.")
        if self.preconditioner not in PRECONDITIONERS:
            raise ValueError(f"refine preconditioner must be one of {PRECONDITIONERS}, got {self.preconditioner!r}.")


class DampedFisher:
    """v ↦ (F + λ_l I) v over all layers (or per layer when block-diagonal), for Q vectors at once."""

    def __init__(self, refinement: RefinementSet, damping: dict[str, float], groups: dict[str, int]):
        self.refinement, self.damping, self.groups = refinement, damping, groups
        self.products = 0

    def __call__(self, v: Vector) -> Vector:
        out = {name: torch.zeros_like(t) for name, t in v.items()}
        for grads in self.refinement.gradients():
            coefficients: dict[int, torch.Tensor] = {}
            for name, flat in grads.items():  # (b, P_l)
                part = (flat @ v[name].flatten(1).T).cpu()  # (b, Q): g_nᵀ v, this layer's share
                group = self.groups[name]
                coefficients[group] = coefficients[group] + part if group in coefficients else part
            for name, flat in grads.items():
                c = coefficients[self.groups[name]].to(flat.device)
                out[name].view(out[name].shape[0], -1).addmm_(c.T, flat)  # (Q, P_l) += Σ_n c_nq g_n
        self.products += 1
        n = self.refinement.n_sequences
        return {name: out[name].div_(n).add_(v[name], alpha=self.damping[name]) for name in v}  # in place: one copy


class EkfacInverse:
    """r ↦ diag(Λ + λ)⁻¹ r in the Kronecker eigenbasis: the damped EK-FAC inverse precondition.py applies.

    CG runs in the eigenbasis (an orthogonal change of basis keeps every inner product and the spectrum), so
    the preconditioner is a division; only the captured tokens and the queries are rotated, once.
    """

    def __init__(self, layers, eigen: dict, correction: FactorSums, damping: Damping, dtype):
        self.rotations = rotations_for(eigen, dtype, layer_devices(layers))
        self.denominators, self.damping = {}, {}
        for name in layers:
            curvature = correction.mean(name, names.EIGENVALUE_CORRECTION)
            curvature = curvature.to(dtype=dtype, device=self.rotations[name][0].device)  # (d_out, d_in)
            self.damping[name] = damping.for_layer(curvature)
            self.denominators[name] = curvature + self.damping[name]

    def __call__(self, r: Vector) -> Vector:
        return {name: tensor / self.denominators[name] for name, tensor in r.items()}

    def scaled_identity(self, r: Vector) -> Vector:
        """r ↦ r / λ_l: the preconditioner that ignores the curvature (plain CG under one λ)."""
        return {name: tensor / self.damping[name] for name, tensor in r.items()}


def refine_queries(
    model,
    layers: dict[str, TrackedLayer],
    query_ids: list[str],
    query_batches: Sequence[dict],
    refinement_batches: Sequence[dict],
    eigen: dict,
    correction: FactorSums,
    damping: Damping = Damping(),
    settings: Refine = Refine(),
    fisher: str = "true",
    seed: int = 0,
    rank: int | None = None,
    dtype=torch.float32,
    max_tokens: int | str | None = MAX_TOKENS,
    progress: bool = True,
    logger: logging.Logger | None = None,
    callback: Callable[[int, Vector, torch.Tensor], None] | None = None,
) -> Preconditioned:
    """Every query's gradient times (F + λI)⁻¹ by EK-FAC-preconditioned CG, rank-r afterwards if `rank`.

    `seed` is the covariance's fitting seed: with the factors' fitting batches as the refinement set, F's
    labels are exactly the ones A and S were fitted on. Logs the cache mode and the residuals.
    """
    logger = logger or log
    if eigen is None or correction is None:
        raise ValueError("estimator 'ekfac_cg' needs the eigendecomposition and the eigenvalue correction.")
    inverse = EkfacInverse(layers, eigen, correction, damping, dtype)
    result = Preconditioned(list(query_ids), "ekfac_cg", rank, damping=dict(inverse.damping))
    refinement = None
    if settings.steps > 0:
        refinement = RefinementSet(
            model,
            layers,
            refinement_batches,
            fisher,
            seed,
            dtype,
            settings.cache_bytes,
            max_tokens,
            progress=progress,
            rotations=inverse.rotations,
        )
        logger.info(refinement.describe())
    groups = {name: i for i, name in enumerate(layers)} if settings.block_diagonal else dict.fromkeys(layers, 0)
    parts: dict[str, list] = {name: [] for name in layers}
    for b in query_chunks(model, layers, query_batches, settings.query_chunk, dtype, progress, inverse.rotations):
        x = inverse(b)  # the EK-FAC solution: ekfac_cg at 0 steps
        if refinement is not None:
            operator = DampedFisher(refinement, inverse.damping, groups)
            bar = tqdm(total=settings.steps, desc="ekfac_cg", disable=not progress, unit="step")
            x, history = conjugate_gradients(
                operator,
                inverse if settings.preconditioner == "ekfac" else inverse.scaled_identity,
                b,
                x,
                settings.steps,
                settings.tolerance,
                groups,
                _steps_to(bar, callback, inverse.rotations),
            )
            bar.close()
            logger.info(
                "ekfac_cg, %d queries: %d CG steps (%d products with F), max relative residual %s",
                len(next(iter(b.values()))),
                len(history) - 1,
                operator.products,
                " → ".join(f"{float(h.max()):.3g}" for h in history),
            )
        del b
        for name in layers:
            parts[name].append(final_form(x.pop(name), inverse.rotations[name], rank))  # back from the eigenbasis
    for name, pieces in parts.items():
        result.layers[name] = {k: torch.cat([p[k] for p in pieces]) for k in pieces[0]}
    return result


def _steps_to(bar, callback, rotations):
    """CG's callback: advance the bar; hand `callback` the iterate back in parameter space."""

    def on_step(step, iterate, residual):
        bar.update(int(step > 0))
        if callback:
            back = {name: rotations[name][1] @ x @ rotations[name][0].T for name, x in iterate.items()}
            callback(step, back, residual)

    return on_step


def query_chunks(model, layers, query_batches, chunk: int | None, dtype, progress, rotations) -> Iterator[Vector]:
    """Query gradients in the eigenbasis {layer: (Q_c, d_out, d_in)}, whole query batches at a time, ≥ `chunk`
    queries each (all of them if None): the CG state is about six full-rank copies of a chunk."""
    pending: dict[str, list] = {name: [] for name in layers}
    count = 0
    for batch in tqdm(query_batches, desc="query gradients", disable=not progress, unit="batch"):
        for name, grad in query_gradients(model, layers, batch, rotations, dtype).items():
            pending[name].append(grad)
        count += batch["input_ids"].shape[0]
        if chunk is not None and count >= chunk:
            yield {name: torch.cat(p) for name, p in pending.items()}
            pending, count = {name: [] for name in layers}, 0
    if count:
        yield {name: torch.cat(p) for name, p in pending.items()}
