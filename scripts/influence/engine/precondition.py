"""Query gradients, preconditioned by (curvature + λ)⁻¹, optionally low rank.

Estimators (rows of `estimators.ESTIMATORS`) share one code path:
  ekfac    (Q_S ⊗ Q_A) diag(Λ + λ)⁻¹ (Q_S ⊗ Q_A)ᵀ, Λ the fitted eigenvalue correction;
  kfac     the same with Λ = n̄ · (eig S ⊗ eig A), n̄ = tokens per fitting sequence,
           which puts K-FAC on EK-FAC's per-sequence scale (kronfluence omits n̄);
  identity no preconditioning: plain gradient dot products;
  cosine   identity on unit-norm gradients (the candidate norm is divided at scoring);
  ekfac_cosine  EK-FAC on gradients of unit norm in the damped EK-FAC inverse's metric, ‖(G + λ)^{-1/2} g‖
           (the query's here, the candidate's at scoring: scores.metric_norm2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from . import estimators, names
from .containers import FactorSums, Preconditioned
from .eigen import rotations_for
from .hooks import LayerCapture
from .model import TrackedLayer, input_device, layer_devices

DAMPING_MODES = ("relative", "absolute")


@dataclass(frozen=True)
class Damping:
    """λ per layer: `value` × mean(curvature eigenvalues) ('relative', the paper's 0.1) or `value` itself."""

    mode: str = "relative"
    value: float = 0.1

    def __post_init__(self):
        if self.mode not in DAMPING_MODES:
            raise ValueError(f"damping mode must be one of {DAMPING_MODES}, got {self.mode!r}.")
        if not self.value > 0:
            raise ValueError(f"damping value must be positive, got {self.value}.")

    def for_layer(self, eigenvalues: torch.Tensor) -> float:
        return self.value * float(eigenvalues.mean()) if self.mode == "relative" else self.value


def curvature_eigenvalues(
    curvature: str, eigen_layer: dict, correction: torch.Tensor | None, tokens_per_sequence: float
):
    """The (d_out, d_in) eigenvalues of the layer's curvature (a registry `curvature`) in the Kronecker eigenbasis."""
    if curvature == "ekfac":
        return correction
    s_values = eigen_layer[names.GRADIENT_EIGENVALUES].clamp(min=0)
    a_values = eigen_layer[names.ACTIVATION_EIGENVALUES].clamp(min=0)
    return tokens_per_sequence * torch.outer(s_values, a_values)  # (d_out, d_in)


def query_gradients(model, layers, batch: dict, rotations: dict | None, dtype) -> dict[str, torch.Tensor]:
    """Per-query gradients of the completion loss, {module: (Q, d_out, d_in)}.

    With `rotations`, returns them in the Kronecker eigenbasis, Q_Sᵀ G Q_A,
    rotating tokens first: (g Q_S)ᵀ (a Q_A).
    """
    grads = {}

    def keep(name, a, g):
        if rotations is not None:
            q_a, q_s = rotations[name]
            a, g = a @ q_a, g @ q_s  # (Q, T, d_in), (Q, T, d_out)
        grads[name] = g.transpose(1, 2) @ a  # (Q, d_out, d_in)

    with LayerCapture(model, layers, keep, dtype) as capture:
        capture.run(batch)
    for name, grad in grads.items():
        if not torch.isfinite(grad).all():
            raise FloatingPointError(f"a query gradient of {name} has NaN or Inf values.")
    return grads


def truncate(matrix: torch.Tensor, rank: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-r factors (left = U·diag(s), right = V) of a (Q, m, n) batch of matrices.

    Randomised SVD with 10 extra columns and 2 power iterations: ~8x faster
    than a full SVD of LLM-sized layers, and its score error against full rank
    matches the exact truncation's (see the benchmark). Seeded, so reruns agree.
    """
    with torch.random.fork_rng(devices=[matrix.device] if matrix.is_cuda else []):
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(matrix, q=min(rank + 10, *matrix.shape[-2:]), niter=2)
    return u[..., :rank] * s[..., None, :rank], v[..., :rank]  # (Q, m, r), (Q, n, r)


def precondition_queries(
    model,
    layers: dict[str, TrackedLayer],
    query_ids: list[str],
    batches: Iterable[dict],
    *,
    estimator: str = "ekfac",
    eigen: dict | None = None,
    correction: FactorSums | None = None,
    damping: Damping = Damping(),
    rank: int | None = None,
    dtype=torch.float32,
    progress: bool = True,
    tokens_per_sequence: float | None = None,
) -> Preconditioned:
    """Precondition every query's gradient; keep a rank-r approximation if `rank` is set.

    K-FAC needs only the eigendecomposition and n̄ (`tokens_per_sequence`, by
    default read from `correction`); EK-FAC needs the correction itself.
    Each batch of queries is reduced to its final form before the next is
    computed, so a rank-r run never holds more than one batch at full rank.
    """
    spec = estimators.get(estimator)
    if spec.refines:
        raise ValueError(f"estimator {estimator!r} refines by CG on a refinement set: use refine.refine_queries.")
    needs_factors = spec.curvature is not None
    if tokens_per_sequence is None and correction is not None:
        tokens_per_sequence = correction.n_tokens / correction.n_sequences
    if needs_factors and (
        eigen is None or (correction is None and spec.curvature == "ekfac") or tokens_per_sequence is None
    ):
        raise ValueError(
            f"estimator {estimator!r} needs the eigendecomposition and the eigenvalue correction "
            "(K-FAC: the eigendecomposition and tokens_per_sequence)."
        )
    rotations = rotations_for(eigen, dtype, layer_devices(layers)) if needs_factors else None
    result = Preconditioned(list(query_ids), estimator, rank)

    def denominator(name: str) -> torch.Tensor:
        """(curvature + λ) of one layer in the Kronecker eigenbasis; records λ."""
        lam = correction.mean(name, names.EIGENVALUE_CORRECTION) if spec.curvature == "ekfac" else None
        curvature = curvature_eigenvalues(spec.curvature, eigen[name], lam, tokens_per_sequence)
        curvature = curvature.to(dtype=dtype, device=rotations[name][0].device)
        result.damping[name] = damping.for_layer(curvature)
        return curvature + result.damping[name]

    # A unit-normalised curvature estimator needs every layer's (curvature + λ) for each query's norm, and the
    # candidates' at scoring (kept in result.metric: factor-sized); the others form it layer by layer.
    metric_norm = needs_factors and spec.unit_norm
    for name in layers if metric_norm else ():
        q_a, q_s = rotations[name]
        result.metric[name] = {
            names.METRIC_ROTATION_A: q_a,
            names.METRIC_ROTATION_S: q_s,
            names.METRIC_DENOMINATOR: denominator(name),
        }
    home = input_device(model)
    parts: dict[str, list[dict]] = {name: [] for name in layers}
    for batch in tqdm(batches, desc="precondition queries", disable=not progress, unit="batch"):
        grads = query_gradients(model, layers, batch, rotations, dtype)
        if spec.unit_norm:  # ‖g‖, or with a curvature ‖(G + λ)^{-1/2} g‖ = sqrt(Σ g̃² / (Λ + λ)) in the eigenbasis
            scale = {name: result.metric[name][names.METRIC_DENOMINATOR] if metric_norm else 1.0 for name in grads}
            norm = torch.sqrt(sum((g.square() / scale[name]).sum((1, 2)).to(home) for name, g in grads.items()))  # (Q,)
            grads = {name: g / norm.clamp(min=1e-30).to(g.device)[:, None, None] for name, g in grads.items()}
        for name in list(grads):
            grad = grads.pop(name)  # drop each raw gradient as soon as it is preconditioned
            if needs_factors:  # still in the eigenbasis
                grad = grad / (result.metric[name][names.METRIC_DENOMINATOR] if metric_norm else denominator(name))
            if not torch.isfinite(grad).all():  # else the rank-r SVD fails with a LinAlgError naming nothing
                raise FloatingPointError(
                    f"layer {name}: the preconditioned query gradient has NaN or Inf values; "
                    "the layer's factors (eigen.safetensors, lambda.safetensors) or the model are broken."
                )
            parts[name].append(final_form(grad, rotations[name] if needs_factors else None, rank))
    for name, pieces in parts.items():
        result.layers[name] = {
            k: torch.cat([p[k] for p in pieces]) if len(pieces) > 1 else pieces[0][k] for k in pieces[0]
        }
    return result


def final_form(grad: torch.Tensor, rotation: tuple | None, rank: int | None) -> dict[str, torch.Tensor]:
    """Rotate back to parameter space, at full rank or as rank-r factors.

    Truncating in the eigenbasis is exact (rotations keep singular values) and
    skips the full back-rotation, which dominates the cost at full rank.
    """
    low_rank = rank is not None and rank < min(grad.shape[-2:])
    if low_rank:
        left, right = truncate(grad, rank)
        if rotation is not None:
            q_a, q_s = rotation
            left, right = q_s @ left, q_a @ right  # (Q, d_out, r), (Q, d_in, r)
        return {names.LEFT: left, names.RIGHT: right}
    if rotation is not None:
        q_a, q_s = rotation
        grad = q_s @ grad @ q_a.T  # (Q, d_out, d_in)
    return {names.PRECONDITIONED: grad}
