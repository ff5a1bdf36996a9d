"""Preconditioned conjugate gradients on many right-hand sides at once, over per-layer tensors.

A vector is a dict {layer: (Q, ...)}: Q right-hand sides, one tensor per tracked layer. Inner products
are taken per query and per *group* of layers: one group (all layers) solves the full system, one group
per layer solves a block-diagonal one (each block its own CG, all in the same passes). Every scalar of
CG (α, β, the residual) is a (Q, groups) tensor, so queries and blocks converge and stop independently.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Vector = dict[str, torch.Tensor]
Operator = Callable[[Vector], Vector]


class CurvatureError(FloatingPointError):
    """The (preconditioned) system is not positive definite or a residual is not finite."""


def dot(u: Vector, v: Vector, groups: dict[str, int], n_groups: int) -> torch.Tensor:
    """Per-query, per-group inner products (Q, n_groups), float64 so long sums keep their digits."""
    first = next(iter(u.values()))
    out = torch.zeros(first.shape[0], n_groups, dtype=torch.float64)
    for name, tensor in u.items():
        out[:, groups[name]] += (tensor * v[name]).flatten(1).sum(1).to(device="cpu", dtype=torch.float64)
    return out


def layer_terms(u: Vector, v: Vector) -> dict[str, torch.Tensor]:
    """Each layer's share (Q,) of the inner product, to name the layer in an error."""
    return {name: (tensor * v[name]).flatten(1).sum(1).double().cpu() for name, tensor in u.items()}


def _scaled(coefficient: torch.Tensor, group: int, like: torch.Tensor) -> torch.Tensor:
    """Column `group` of a (Q, groups) coefficient, shaped to broadcast over a (Q, ...) layer tensor."""
    return coefficient[:, group].to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


def _check_finite(r: Vector, step: int) -> None:
    for name, tensor in r.items():
        if not torch.isfinite(tensor).all():
            raise CurvatureError(
                f"ekfac_cg step {step}: the residual of layer {name!r} has NaN or Inf values; "
                "check the factors, the damping and the refinement sequences."
            )


def _check_positive(
    values: torch.Tensor, active: torch.Tensor, u: Vector, v: Vector, groups: dict, step: int, what: str
) -> None:
    """Stop if an active (query, group) has values ≤ 0 or non-finite, naming the layer that drags it down."""
    bad = active & ~(values > 0)
    if not bad.any():
        return
    query, group = (int(i) for i in bad.nonzero()[0])
    terms = {name: float(t[query]) for name, t in layer_terms(u, v).items() if groups[name] == group}
    layer = min(terms, key=lambda n: terms[n] if terms[n] == terms[n] else float("-inf"))  # NaN first
    raise CurvatureError(
        f"ekfac_cg step {step}: {what} = {float(values[query, group]):.3g} ≤ 0 (or not finite) for query "
        f"#{query}; its most negative term is layer {layer!r} ({terms[layer]:.3g}). The system is not positive "
        "definite: a factor or a captured gradient is broken (NaN, negative eigenvalues) or the damping is ≤ 0."
    )


def conjugate_gradients(
    apply_a: Operator,
    apply_m: Operator,
    b: Vector,
    x: Vector,
    steps: int,
    tolerance: float,
    groups: dict[str, int] | None = None,
    callback: Callable[[int, Vector, torch.Tensor], None] | None = None,
) -> tuple[Vector, list[torch.Tensor]]:
    """Solve A x = b from `x` with preconditioner M⁻¹ (`apply_m`) for every query (and group) at once.

    Stops a (query, group) when its relative residual ‖b − A x‖ / ‖b‖ ≤ `tolerance`, and everything after
    `steps` products with A (plus one for the starting residual). Returns x and the relative residuals
    (Q, groups) at steps 0, 1, ...; `callback(step, x, residual)` sees every iterate. Raises
    CurvatureError naming the layer and step if pᵀAp or rᵀM⁻¹r is not positive, or r is not finite.
    """
    groups = groups or dict.fromkeys(b, 0)
    n_groups = max(groups.values()) + 1
    x = {name: t.clone() for name, t in x.items()}
    b_norm = dot(b, b, groups, n_groups).sqrt()  # (Q, G)

    def relative(r):
        norm = dot(r, r, groups, n_groups).sqrt()
        return torch.where(b_norm > 0, norm / b_norm.clamp(min=1e-300), torch.zeros_like(norm))

    if steps <= 0:
        return x, []
    ax = apply_a(x)
    r = {name: b[name] - ax[name] for name in b}
    del ax
    _check_finite(r, 0)
    history = [relative(r)]
    active = history[0] > tolerance
    if callback:
        callback(0, x, history[0])
    p = {name: t.clone() if t is r[name] else t for name, t in apply_m(r).items()}  # r changes in place
    rz = dot(r, p, groups, n_groups)
    _check_positive(rz, active, r, p, groups, 0, "rᵀM⁻¹r")
    for step in range(1, steps + 1):
        if not active.any():
            break
        ap = apply_a(p)
        pap = dot(p, ap, groups, n_groups)
        _check_positive(pap, active, p, ap, groups, step, "pᵀ(F+λI)p")
        alpha = torch.where(active, rz / torch.where(active, pap, torch.ones_like(pap)), torch.zeros_like(rz))
        for name in x:
            x[name].add_(_scaled(alpha, groups[name], p[name]) * p[name])
            r[name].sub_(_scaled(alpha, groups[name], ap[name]) * ap[name])
        del ap
        _check_finite(r, step)
        history.append(relative(r))
        active = active & (history[-1] > tolerance)
        if callback:
            callback(step, x, history[-1])
        z = apply_m(r)
        rz_new = dot(r, z, groups, n_groups)
        _check_positive(rz_new, active, r, z, groups, step, "rᵀM⁻¹r")
        beta = torch.where(active, rz_new / torch.where(active, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        keep = active.double()  # converged (query, group)s keep their direction: α = 0 leaves them still
        for name in p:
            fresh = z[name] + _scaled(beta, groups[name], p[name]) * p[name]
            mask = _scaled(keep, groups[name], p[name])
            p[name] = mask * fresh + (1 - mask) * p[name]
        rz = torch.where(active, rz_new, rz)
        del z
    return x, history
