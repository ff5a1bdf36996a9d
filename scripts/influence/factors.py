"""Fitting the EK-FAC factors as mergeable partial sums.

A fitting job returns sums plus counts, never means, so jobs over disjoint
shards of the fitting set merge exactly: sum the sums, add the counts.
  A_l = Σ_tokens a aᵀ / n_tokens,  S_l = Σ_tokens g gᵀ / n_tokens   (K-FAC)
  Λ_l = Σ_sequences (Q_Sᵀ G Q_A)² / n_sequences                    (EK-FAC)
Padding is excluded from every sum and count; the last real token of a
sequence counts (its output gradient is zero, its input is real).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from . import names
from .data import split_batch
from .hooks import LayerCapture
from .model import TrackedLayer

# Per-sequence rotated gradients are formed this many elements at a time, so
# memory stays bounded whatever the batch size and layer width.
CHUNK_ELEMENTS = 2**25
# Tokens per forward/backward pass: bounds activation memory (see split_batch).
MAX_TOKENS = 1024


@dataclass
class FactorSums:
    """Partial sums of factors per module, with the counts that normalise them."""

    sums: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # module -> factor -> sum
    n_tokens: int = 0
    n_sequences: int = 0

    def merge(self, other: FactorSums) -> FactorSums:
        """The sums of both jobs, as if one job had seen both shards."""
        if set(self.sums) != set(other.sums):
            raise ValueError("cannot merge factor sums fitted on different module sets.")
        merged = {m: {f: t + other.sums[m][f] for f, t in fs.items()} for m, fs in self.sums.items()}
        return FactorSums(merged, self.n_tokens + other.n_tokens, self.n_sequences + other.n_sequences)

    def mean(self, module: str, factor: str) -> torch.Tensor:
        """Sum divided by its count: tokens for covariances, sequences for Λ."""
        count = self.n_sequences if factor == names.EIGENVALUE_CORRECTION else self.n_tokens
        return self.sums[module][factor] / count

    def check_finite(self) -> None:
        for module, factors in self.sums.items():
            for factor, tensor in factors.items():
                if not torch.isfinite(tensor).all():
                    raise FloatingPointError(f"factor {factor} of {module} has NaN or Inf values.")


def _fit(model, layers, batches, consumer_for, fisher, seed, dtype, desc, progress, max_tokens) -> FactorSums:
    state = FactorSums()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    consumer = consumer_for(state)
    with LayerCapture(model, layers, consumer, dtype) as capture:
        for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
            for micro in split_batch(batch, max_tokens):
                capture.run(micro, fisher, generator)
            mask = batch["attention_mask"]
            state.n_tokens += int(mask.sum())
            state.n_sequences += int((mask.sum(1) > 0).sum())
    state.check_finite()
    return state


def fit_covariance(
    model,
    layers: dict[str, TrackedLayer],
    batches: Iterable[dict],
    fisher: str = "true",
    seed: int = 0,
    dtype=torch.float32,
    progress: bool = True,
    max_tokens: int | None = MAX_TOKENS,
) -> FactorSums:
    """Σ a aᵀ and Σ g gᵀ over non-padding tokens, per tracked layer."""

    def consumer_for(state):
        shared: dict[int, torch.Tensor] = {}  # id(a) -> a aᵀ of this batch, for layers sharing an input

        def on_pair(name, a, g):
            sums = state.sums.setdefault(name, {})
            a2, g2 = a.flatten(0, 1), g.flatten(0, 1)  # (B·T, d_in), (B·T, d_out)
            if id(a) not in shared:
                shared.clear()  # keep only the current input alive
                shared[id(a)] = a2.T @ a2  # (d_in, d_in)
            _accumulate(sums, names.ACTIVATION_COVARIANCE, shared[id(a)])
            _accumulate(sums, names.GRADIENT_COVARIANCE, g2.T @ g2)  # (d_out, d_out)

        return on_pair

    return _fit(model, layers, batches, consumer_for, fisher, seed, dtype, "covariance", progress, max_tokens)


def fit_eigenvalue_correction(
    model,
    layers: dict[str, TrackedLayer],
    eigen: dict[str, dict[str, torch.Tensor]],
    batches: Iterable[dict],
    fisher: str = "true",
    seed: int = 1,
    dtype=torch.float32,
    progress: bool = True,
    max_tokens: int | None = MAX_TOKENS,
) -> FactorSums:
    """Σ over sequences of (Q_Sᵀ G Q_A)², G the sequence's weight gradient.

    Rotates tokens before forming G: (g Q_S)ᵀ (a Q_A) costs T·(d_out² + d_in²
    + d_out·d_in) per sequence instead of d_out·d_in·(d_out + d_in) when T is
    smaller than the layer width, as it is for LLM sequences.
    """
    device = next(model.parameters()).device
    rotations = rotations_for(eigen, dtype, device)

    def consumer_for(state):
        rotated_inputs: dict[tuple, torch.Tensor] = {}

        def on_pair(name, a, g):
            q_a, q_s = rotations[name]
            cache_key = (id(a), id(q_a))
            if cache_key not in rotated_inputs:
                rotated_inputs.clear()
                rotated_inputs[cache_key] = a @ q_a  # (B, T, d_in)
            a_rot, g_rot = rotated_inputs[cache_key], g @ q_s  # (B, T, d_in), (B, T, d_out)
            total = torch.zeros(g.shape[-1], a.shape[-1], dtype=dtype, device=device)
            step = max(1, CHUNK_ELEMENTS // (g.shape[-1] * a.shape[-1]))
            for start in range(0, a.shape[0], step):
                grad_rot = g_rot[start : start + step].transpose(1, 2) @ a_rot[start : start + step]  # (b, d_out, d_in)
                total += grad_rot.square_().sum(0)
            _accumulate(state.sums.setdefault(name, {}), names.EIGENVALUE_CORRECTION, total)

        return on_pair

    return _fit(model, layers, batches, consumer_for, fisher, seed, dtype, "eigenvalue correction", progress, max_tokens)


def rotations_for(eigen: dict, dtype, device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(Q_A, Q_S) per module in the compute dtype.

    Layers that share an eigenvector tensor (gate_proj and up_proj) keep
    sharing it after the cast, so their rotated inputs are computed once.
    """
    cast: dict[int, torch.Tensor] = {}

    def to_compute(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in cast:
            cast[id(t)] = t.to(dtype=dtype, device=device)
        return cast[id(t)]

    return {
        m: (to_compute(e[names.ACTIVATION_EIGENVECTORS]), to_compute(e[names.GRADIENT_EIGENVECTORS]))
        for m, e in eigen.items()
    }


def _accumulate(sums: dict[str, torch.Tensor], factor: str, value: torch.Tensor) -> None:
    if factor in sums:
        sums[factor] += value
    else:
        sums[factor] = value.clone()
