"""ekfac_astra: EK-FAC-preconditioned stochastic refinement toward the corpus's curvature (ASTRA, Wang et al. 2025).

Each query's x = (G + λI)⁻¹ ∇L_q is refined by heavy-ball SGD on ½ xᵀ(G + λI)x − xᵀ∇L_q, from the EK-FAC
solution (0 steps is `ekfac` exactly), every step preconditioned by the damped EK-FAC inverse:

    r = (G_B + λ) x − q,   m ← μ m + P⁻¹ r,   x ← x − η m,   η ← η · decay every `lr_decay_interval` steps,

where G_B is the exact Gauss-Newton Hessian (ggn.py: the true Fisher's expectation over labels, no label draw)
of a fresh minibatch B of `batch_size` sequences drawn (seeded) from the pool: the whole corpus or a seeded
sample of it, not the factors' fitting sample. E_B[G_B] = G, the pool's mean Gauss-Newton Hessian, so the
iteration's fixed point is (G + λI)⁻¹ q, the curvature ASTRA targets. Each G_B has full rank (up to tokens ×
vocabulary per sequence), so P⁻¹G_B stays near P⁻¹G and ASTRA's step (η 0.1, momentum 0.9) is stable.

Defaults are ASTRA's as bergson's example uses them: 300 steps, η 0.1, momentum 0.9, minibatches of 16,
η × 0.9 every 100 steps, EK-FAC's damping. One minibatch per step serves every query: its primal pass is
shared and the Q tangents and cotangents are batched (bergson's ASTRA forms one query's product at a time).

The logged residual ‖(G_B + λ)x − q‖ / ‖q‖ is the minibatch's: it falls to the minibatch noise floor, not to 0;
the iHVP accuracy (evaluation's ihvp_steps, against the exact (G + λI)⁻¹ q) is the measure of convergence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import MAX_TOKENS
from .cg import Vector, dot
from .containers import FactorSums, Preconditioned
from .data import pad_batch
from .ggn import GaussNewton
from .model import TrackedLayer
from .precondition import Damping, final_form
from .refine import EkfacInverse, query_chunks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Astra:
    """ASTRA's settings (scoring.astra): steps, step size and its decay, momentum, minibatch size, the pool's
    sampling seed, queries solved together (None: all; memory ≈ 5 full-rank copies of each, plus the product's
    Q tangents of one micro-batch's activations and logits)."""

    steps: int = 300
    lr: float = 0.1
    # ASTRA's 0.9 grew without bound on the evaluation's tiny Llama even at a fifth of the 1/λ_max step, with exact
    # Gauss-Newton products: minibatch curvature that varies by orders of magnitude defeats momentum; 0 is stable
    momentum: float = 0.0
    batch_size: int = 16
    lr_decay: float = 0.9
    lr_decay_interval: int = 100
    seed: int = 0
    query_chunk: int | None = None
    log_every: int = 50

    @classmethod
    def from_settings(cls, settings: dict) -> Astra:
        """From scoring.astra; keys the solver does not take (n_sequences, damping: the pool and the caller's) and
        missing keys are ignored / kept at the defaults."""
        fields = {k: settings[k] for k in cls.__dataclass_fields__ if settings.get(k) is not None}
        return cls(**fields)

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.lr_decay_interval < 1:
            raise ValueError(
                f"scoring.astra: steps must be ≥ 0, batch_size and lr_decay_interval ≥ 1; got steps {self.steps}, "
                f"batch_size {self.batch_size}, lr_decay_interval {self.lr_decay_interval}."
            )
        if not self.lr > 0 or not 0 <= self.momentum < 1 or not 0 < self.lr_decay <= 1:
            raise ValueError(
                f"scoring.astra: lr must be > 0, momentum in [0, 1), lr_decay in (0, 1]; got lr {self.lr}, "
                f"momentum {self.momentum}, lr_decay {self.lr_decay}."
            )


def pool_rows(batches: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    """The pool's sequences as (ids, labels), padding stripped, so minibatches can be drawn row by row."""
    rows = []
    for batch in batches:
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            length = int(mask.sum())
            if length:
                rows.append((ids[:length].tolist(), labels[:length].tolist()))
    return rows


class Minibatches:
    """Step s's minibatch: `batch_size` rows of the pool drawn without replacement (seeded by seed and s), padded;
    the whole pool when it has no more rows than that (then the product is deterministic under empirical labels)."""

    def __init__(self, rows, batch_size: int, seed: int):
        if not rows:
            raise ValueError("ekfac_astra needs a non-empty pool of corpus sequences.")
        self.rows, self.size, self.seed = rows, min(batch_size, len(rows)), seed

    def __call__(self, step: int) -> dict:
        if self.size == len(self.rows):
            chosen = range(len(self.rows))
        else:
            chosen = np.random.default_rng([self.seed, step]).choice(len(self.rows), self.size, replace=False)
        picked = [self.rows[i] for i in sorted(chosen)]
        return pad_batch([ids for ids, _ in picked], [labels for _, labels in picked])


def astra_queries(
    model,
    layers: dict[str, TrackedLayer],
    query_ids: list[str],
    query_batches: Sequence[dict],
    pool_batches: Sequence[dict],
    eigen: dict,
    correction: FactorSums,
    damping: Damping = Damping(),
    settings: Astra = Astra(),
    rank: int | None = None,
    dtype=torch.float32,
    max_tokens: int | str | None = MAX_TOKENS,
    progress: bool = True,
    logger: logging.Logger | None = None,
    callback=None,
) -> Preconditioned:
    """Every query's gradient times (G_pool + λI)⁻¹ by EK-FAC-preconditioned heavy-ball SGD on minibatches of the
    pool, rank-r afterwards if `rank`. `callback(step, x, residual)` sees every iterate in parameter space."""
    logger = logger or log
    if eigen is None or correction is None:
        raise ValueError("estimator 'ekfac_astra' needs the eigendecomposition and the eigenvalue correction.")
    inverse = EkfacInverse(layers, eigen, correction, damping, dtype)
    result = Preconditioned(list(query_ids), "ekfac_astra", rank, damping=dict(inverse.damping))
    draw = Minibatches(pool_rows(pool_batches), settings.batch_size, settings.seed)
    product = GaussNewton(model, layers, max_tokens)
    logger.info(
        "ekfac_astra: %d steps over minibatches of %d of the pool's %d sequences (exact Gauss-Newton products), "
        "lr %g × %g every %d steps, momentum %g",
        settings.steps,
        draw.size,
        len(draw.rows),
        settings.lr,
        settings.lr_decay,
        settings.lr_decay_interval,
        settings.momentum,
    )
    parts: dict[str, list] = {name: [] for name in layers}
    chunks = query_chunks(model, layers, query_batches, settings.query_chunk, dtype, progress, inverse.rotations)
    for b in chunks:
        x = _iterate(product, b, inverse, draw, settings, progress, logger, callback)
        del b
        for name in layers:
            parts[name].append(final_form(x.pop(name), inverse.rotations[name], rank))  # back from the eigenbasis
    for name, pieces in parts.items():
        result.layers[name] = {k: torch.cat([p[k] for p in pieces]) for k in pieces[0]}
    return result


# A run whose iterate's norm exceeds this multiple of the EK-FAC solution's (or turns non-finite) has diverged: it
# restarts from the EK-FAC solution at half the step, up to MAX_BACKOFFS times. Not the residual: a minibatch's
# residual at the exact solution, (G_B − G) x*, can be larger than the query gradient itself.
DIVERGED = 1000.0
MAX_BACKOFFS = 6
# Power iterations for the step bound: the top eigenvalue's estimate settles within a few percent in ~10 on the
# evaluation's tiny model; each is one product for one vector.
POWER_ITERATIONS = 20


def _iterate(product, b, inverse, draw, settings, progress, logger, callback) -> Vector:
    """The heavy-ball iteration for one chunk of queries {layer: (Q, d_out, d_in)} in the Kronecker eigenbasis,
    restarted at half the step size when it diverges (logged): the fixed point does not depend on the step."""
    bound = largest_curvature(product, draw(0), inverse, settings.seed)
    start = min(settings.lr, 1.0 / bound)
    logger.info(
        "ekfac_astra: λ_max(P⁻¹(G_B + λ)) ≈ %.4g on the first minibatch (power iteration): step %.4g (lr %g, "
        "capped at 1/λ_max)",
        bound,
        start,
        settings.lr,
    )
    for backoff in range(MAX_BACKOFFS + 1):
        lr = start * 0.5**backoff
        x, diverged_at = _run(product, b, inverse, draw, settings, lr, progress, logger, callback)
        if diverged_at is None:
            return x
        if backoff == MAX_BACKOFFS:
            break
        logger.warning(
            "ekfac_astra diverged at step %d with lr %.4g (‖x‖ > %g × the EK-FAC solution's); restarting from the "
            "EK-FAC solution at lr %.4g",
            diverged_at,
            lr,
            DIVERGED,
            lr / 2,
        )
    raise FloatingPointError(
        f"ekfac_astra diverged at step {diverged_at} even at lr {lr:.3g} ({MAX_BACKOFFS} halvings of scoring.astra.lr "
        f"{settings.lr}): check the factors and the damping (scoring.astra.damping), or lower scoring.astra.lr or "
        "scoring.astra.momentum."
    )


def largest_curvature(product, batch: dict, inverse, seed: int, iterations: int = POWER_ITERATIONS) -> float:
    """λ_max of P⁻¹(G_B + λ) on one minibatch, by power iteration from a seeded random vector (Rayleigh quotient in
    P's inner product, where the operator is self-adjoint): the step size heavy-ball can take on that curvature."""
    generator = torch.Generator().manual_seed(seed)
    v = {
        n: torch.randn(1, *d.shape, generator=generator, dtype=d.dtype).to(d.device)
        for n, d in inverse.denominators.items()
    }
    estimate = 0.0
    for _ in range(iterations):
        w = product.mean([batch], v, inverse.rotations)
        w = {n: (w[n] + inverse.damping[n] * v[n]) / inverse.denominators[n] for n in w}
        quotient = sum(float((v[n] * inverse.denominators[n] * w[n]).sum()) for n in v)
        estimate = quotient / sum(float((v[n] * inverse.denominators[n] * v[n]).sum()) for n in v)
        norm = sum(float(t.square().sum()) for t in w.values()) ** 0.5
        v = {n: t / norm for n, t in w.items()}
    return estimate


def _run(product, b, inverse, draw, settings, lr, progress, logger, callback):
    """One run of `settings.steps` steps from the EK-FAC solution at step size `lr`: (x, None), or (None, step) at
    the step it diverged."""
    groups = dict.fromkeys(b, 0)
    b_norm = dot(b, b, groups, 1).sqrt()[:, 0].clamp(min=1e-300)
    x = inverse(b)  # the EK-FAC solution: step 0
    start_norm = dot(x, x, groups, 1).sqrt()[:, 0]  # (Q,)
    momentum = {name: torch.zeros_like(t) for name, t in x.items()}
    _report(callback, 0, x, inverse.rotations, None)
    bar = tqdm(range(settings.steps), desc="ekfac_astra", disable=not progress, unit="step")
    for step in bar:
        if step > 0 and step % settings.lr_decay_interval == 0:
            lr *= settings.lr_decay
        residual = product.mean([draw(step)], x, inverse.rotations)  # G_B x / b, then + λx − q in place
        for name in residual:
            residual[name].add_(x[name], alpha=inverse.damping[name]).sub_(b[name])
        relative = dot(residual, residual, groups, 1).sqrt()[:, 0] / b_norm  # (Q,)
        worst = float(relative.max())
        if not torch.isfinite(relative).all():
            bar.close()
            return None, step
        for name in x:  # m ← μ m + P⁻¹ r, x ← x − η m; the residual's memory holds P⁻¹ r
            direction = residual[name].div_(inverse.denominators[name])
            momentum[name].mul_(settings.momentum).add_(direction)
            x[name].sub_(momentum[name], alpha=lr)
        del residual
        if not bool((dot(x, x, groups, 1).sqrt()[:, 0] <= DIVERGED * start_norm).all()):  # NaN fails too
            bar.close()
            return None, step
        bar.set_postfix(residual=f"{worst:.3g}", lr=f"{lr:.3g}")
        if step % settings.log_every == 0 or step == settings.steps - 1:
            logger.info("ekfac_astra step %d: max relative minibatch residual %.4g, lr %.4g", step, worst, lr)
        _report(callback, step + 1, x, inverse.rotations, relative)
    bar.close()
    return x, None


def _report(callback, step, x, rotations, residual) -> None:
    if callback:
        back = {name: rotations[name][1] @ t @ rotations[name][0].T for name, t in x.items()}
        callback(step, back, residual)
