"""Fitting the EK-FAC factors as mergeable partial sums.

A fitting job returns sums plus counts, never means, so jobs over disjoint
shards of the fitting set merge exactly: sum the sums, add the counts.
  A_l = Σ_tokens a aᵀ / n_tokens,  S_l = Σ_tokens g gᵀ / n_tokens   (K-FAC)
  Λ_l = Σ_sequences (Q_Sᵀ G Q_A)² / n_sequences                    (EK-FAC)
Padding is excluded from every sum and count; the last real token of a
sequence counts (its output gradient is zero, its input is real).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

from . import names
from .batching import CHUNK_ELEMENTS, MAX_TOKENS, batch_seed, micro_batch_tokens
from .containers import FactorSums
from .data import split_batch
from .eigen import rotations_for
from .hooks import LayerCapture
from .model import TrackedLayer, layer_devices, output_device

# xᵀx is built from this many row stripes of its lower triangle: 62% of a
# full matmul's FLOPs, and 1.5x faster on CPU (torch has no syrk).
GRAM_STRIPES = 4


def fit_factor_sums(
    model,
    layers: dict[str, TrackedLayer],
    batches: Iterable[dict],
    consumer_for: Callable[[FactorSums], Callable],
    *,
    fisher: str,
    seed: int,
    dtype: torch.dtype,
    desc: str,
    progress: bool = True,
    max_tokens: int | str | None = MAX_TOKENS,
    first_batch: int = 0,
) -> FactorSums:
    """Run the model over `batches` (labels per `fisher`, seeded per batch) and feed every tracked layer's
    (name, a, g) to the consumer that `consumer_for(state)` returns; count tokens and sequences in `state`."""
    state = FactorSums()
    max_tokens = micro_batch_tokens(model, max_tokens)
    generator = torch.Generator(device=output_device(model))  # labels are sampled from the logits
    consumer = consumer_for(state)
    with LayerCapture(model, layers, consumer, dtype) as capture:
        for index, batch in enumerate(tqdm(batches, desc=desc, disable=not progress, unit="batch"), first_batch):
            generator.manual_seed(batch_seed(seed, index))
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
    max_tokens: int | str | None = MAX_TOKENS,
    first_batch: int = 0,
) -> FactorSums:
    """Σ a aᵀ and Σ g gᵀ over non-padding tokens, per tracked layer.

    `first_batch` is the index of the first batch in the whole fitting set (for shards).
    """

    def consumer_for(state):
        shared: dict[int, torch.Tensor] = {}  # id(a) -> a aᵀ of this batch, for layers sharing an input

        def on_pair(name, a, g):
            sums = state.sums.setdefault(name, {})
            a2, g2 = a.flatten(0, 1), g.flatten(0, 1)  # (B·T, d_in), (B·T, d_out)
            if id(a) not in shared:
                shared.clear()  # keep only the current input alive
                shared[id(a)] = lower_gram(a2)  # (d_in, d_in)
            _accumulate(sums, names.ACTIVATION_COVARIANCE, shared[id(a)])
            _accumulate(sums, names.GRADIENT_COVARIANCE, lower_gram(g2))  # (d_out, d_out)

        return on_pair

    state = fit_factor_sums(
        model,
        layers,
        batches,
        consumer_for,
        fisher=fisher,
        seed=seed,
        dtype=dtype,
        desc="covariance",
        progress=progress,
        max_tokens=max_tokens,
        first_batch=first_batch,
    )
    for factors in state.sums.values():
        for tensor in factors.values():
            tensor.copy_(tensor.tril() + tensor.tril(-1).T)  # mirror the accumulated lower triangle
    return state


def lower_gram(x: torch.Tensor) -> torch.Tensor:
    """The lower triangle (and diagonal blocks) of xᵀx (d, d) for x (n, d); zeros above the block diagonal."""
    d = x.shape[1]
    out = x.new_zeros(d, d)
    edges = [round(i * d / GRAM_STRIPES) for i in range(GRAM_STRIPES + 1)]
    for lo, hi in zip(edges, edges[1:]):
        out[lo:hi, :hi] = x[:, lo:hi].T @ x[:, :hi]  # (stripe, hi)
    return out


def sequence_gradients(g: torch.Tensor, a: torch.Tensor):
    """Yield G over consecutive chunks of sequences, G = g_nᵀ a_n per sequence: (b, d_out, d_in).

    G lives in a buffer reused by the next chunk: consume it before advancing.
    """
    n_seq, d_out, d_in = g.shape[0], g.shape[-1], a.shape[-1]
    step = max(1, CHUNK_ELEMENTS.get(g.device.type, CHUNK_ELEMENTS["cuda"]) // (d_out * d_in))
    buffer = g.new_empty(min(step, n_seq), d_out, d_in)
    for start in range(0, n_seq, step):
        out = buffer[: min(step, n_seq - start)]
        torch.bmm(g[start : start + step].transpose(1, 2), a[start : start + step], out=out)
        yield out


def fit_eigenvalue_correction(
    model,
    layers: dict[str, TrackedLayer],
    eigen: dict[str, dict[str, torch.Tensor]],
    batches: Iterable[dict],
    fisher: str = "true",
    seed: int = 1,
    dtype=torch.float32,
    progress: bool = True,
    max_tokens: int | str | None = MAX_TOKENS,
    first_batch: int = 0,
) -> FactorSums:
    """Σ over sequences of (Q_Sᵀ G Q_A)², G the sequence's weight gradient (`first_batch` as in fit_covariance).

    Rotates tokens before forming G: (g Q_S)ᵀ (a Q_A) costs T·(d_out² + d_in²
    + d_out·d_in) per sequence instead of d_out·d_in·(d_out + d_in) when T is
    smaller than the layer width, as it is for LLM sequences.
    """
    rotations = rotations_for(eigen, dtype, layer_devices(layers))

    def consumer_for(state):
        rotated_inputs: dict[tuple, torch.Tensor] = {}

        def on_pair(name, a, g):
            q_a, q_s = rotations[name]
            cache_key = (id(a), id(q_a))
            if cache_key not in rotated_inputs:
                rotated_inputs.clear()
                rotated_inputs[cache_key] = a @ q_a  # (B, T, d_in)
            a_rot, g_rot = rotated_inputs[cache_key], g @ q_s  # (B, T, d_in), (B, T, d_out)
            total = torch.zeros(g.shape[-1], a.shape[-1], dtype=dtype, device=g.device)
            for grad_rot in sequence_gradients(g_rot, a_rot):  # (b, d_out, d_in)
                for one in grad_rot:
                    total.addcmul_(one, one)
            _accumulate(state.sums.setdefault(name, {}), names.EIGENVALUE_CORRECTION, total)

        return on_pair

    return fit_factor_sums(
        model,
        layers,
        batches,
        consumer_for,
        fisher=fisher,
        seed=seed,
        dtype=dtype,
        desc="eigenvalue correction",
        progress=progress,
        max_tokens=max_tokens,
        first_batch=first_batch,
    )


def _accumulate(sums: dict[str, torch.Tensor], factor: str, value: torch.Tensor) -> None:
    if factor in sums:
        sums[factor] += value
    else:
        sums[factor] = value.clone()
