"""The measurements behind the preflight (run/preflight.py): does a sequence's gradient depend on the weights'
dtype, on its batch neighbours or on padding, and do padded positions stay out of the factors?

Gradients are compared through a two-sided Gaussian sketch per layer, R_out G Rᵀ_in (k × k), formed from the
captured (a, g) without materialising G = Σ_t g_t a_tᵀ: the sketch is linear, so two gradients that differ
differ in it, and its cosines and relative errors estimate the full ones (within a few percent at k = 32)
at a memory cost independent of the model's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import names
from .data import pad_batch
from .factors import fit_factor_sums
from .hooks import LayerCapture
from .model import TrackedLayer

SKETCH = 32


def _projections(layers: dict[str, TrackedLayer], k: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(R_out (k, d_out), R_in (k, d_in [+1])) per layer, seeded by the layer's position, on the layer's device."""
    out = {}
    for index, (name, layer) in enumerate(layers.items()):
        generator = torch.Generator().manual_seed(seed + index)
        r_out = torch.randn(k, layer.d_out, generator=generator, dtype=torch.float64) / k**0.5
        r_in = torch.randn(k, layer.d_in_total, generator=generator, dtype=torch.float64) / k**0.5
        device = layer.module.weight.device
        out[name] = (r_out.to(device), r_in.to(device))
    return out


@torch.no_grad()
def _sketch(a: torch.Tensor, g: torch.Tensor, r_out: torch.Tensor, r_in: torch.Tensor) -> torch.Tensor:
    return torch.einsum("btk,btl->bkl", g @ r_out.T, a @ r_in.T).flatten(1)  # (B, k·k)


def gradient_sketches(
    model, layers: dict[str, TrackedLayer], batches: Sequence[dict], k: int = SKETCH, seed: int = 0
) -> dict[str, torch.Tensor]:
    """{layer: (N, k·k)} float64 sketches of each sequence's gradient of its summed loss (its own labels)."""
    projections = _projections(layers, k, seed)
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def keep(name, a, g):
        rows[name].append(_sketch(a, g, *projections[name]).cpu())

    with LayerCapture(model, layers, keep, torch.float64) as capture:
        for batch in batches:
            capture.run(batch)
    return {name: torch.cat(parts) for name, parts in rows.items()}


def agreement(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per layer, over sequences: the smallest cosine and the largest relative error ‖x − r‖ / ‖r‖ of `other`'s
    sketches against `reference`'s (two zero gradients agree)."""
    out = {}
    for name, ref in reference.items():
        x = other[name]
        ref_norm, x_norm = ref.norm(dim=1), x.norm(dim=1)
        cosine = (ref * x).sum(1) / (ref_norm * x_norm).clamp_min(1e-300)
        cosine = torch.where((ref_norm == 0) & (x_norm == 0), torch.ones_like(cosine), cosine)
        error = (x - ref).norm(dim=1) / ref_norm.clamp_min(1e-300)
        error = torch.where(ref_norm == 0, x_norm, error)
        out[name] = {"cosine": float(cosine.min()), "relative_error": float(error.max())}
    return out


def padded_together(sequences: Sequence[Sequence[int]], pad_id: int, extra: int = 5) -> tuple[list[int], dict]:
    """(order, batch): the sequences in reverse order in one batch, right-padded to the longest plus `extra`."""
    order = list(range(len(sequences)))[::-1]
    batch = pad_batch([sequences[i] for i in order], pad_id=pad_id)
    b = len(order)
    batch = {
        "input_ids": torch.cat([batch["input_ids"], torch.full((b, extra), pad_id)], 1),
        "attention_mask": torch.cat([batch["attention_mask"], torch.zeros(b, extra, dtype=torch.long)], 1),
        "labels": torch.cat([batch["labels"], torch.full((b, extra), -100)], 1),
    }
    return order, batch


def batch_dependence(
    model, layers: dict[str, TrackedLayer], sequences: Sequence[Sequence[int]], pad_id: int
) -> dict[str, dict[str, float]]:
    """Each sequence's gradient alone (no padding) against inside one padded batch with the others."""
    alone = gradient_sketches(model, layers, [pad_batch([s], pad_id=pad_id) for s in sequences])
    order, batch = padded_together(sequences, pad_id)
    together = gradient_sketches(model, layers, [batch])
    back = torch.argsort(torch.tensor(order))
    return agreement(alone, {name: s[back] for name, s in together.items()})


def factor_padding(
    model, layers: dict[str, TrackedLayer], sequences: Sequence[Sequence[int]], pad_id: int
) -> dict[str, dict[str, float]]:
    """Relative error of tr A and tr S (Σ ‖a‖², Σ ‖g‖², as the factors accumulate them) and of the token count
    over the sequences in one padded batch against one at a time, empirical labels so both see the same: a
    padded position that leaked into a factor would add to its trace (the full sums cost 2 GB on SmolLM2)."""

    def traces(batches):
        def consumer_for(state):
            def on_pair(name, a, g):
                zero = torch.zeros((), dtype=torch.float64)  # tensors: fit_factor_sums checks them finite
                sums = state.sums.setdefault(name, {names.ACTIVATION_COVARIANCE: zero, names.GRADIENT_COVARIANCE: zero})
                sums[names.ACTIVATION_COVARIANCE] = sums[names.ACTIVATION_COVARIANCE] + a.square().sum().cpu()
                sums[names.GRADIENT_COVARIANCE] = sums[names.GRADIENT_COVARIANCE] + g.square().sum().cpu()

            return on_pair

        return fit_factor_sums(
            model,
            layers,
            batches,
            consumer_for,
            fisher="empirical",
            seed=0,
            dtype=torch.float64,
            desc="",
            progress=False,
        )

    alone = traces([pad_batch([s], pad_id=pad_id) for s in sequences])
    together = traces([padded_together(sequences, pad_id)[1]])
    out = {}
    for name in layers:
        errors = [
            float(abs(together.sums[name][f] - alone.sums[name][f]) / max(float(alone.sums[name][f]), 1e-300))
            for f in (names.ACTIVATION_COVARIANCE, names.GRADIENT_COVARIANCE)
        ]
        counted = together.n_tokens == alone.n_tokens and together.n_sequences == alone.n_sequences
        out[name] = {"relative_error": max(errors) if counted else float("inf")}
    return out
