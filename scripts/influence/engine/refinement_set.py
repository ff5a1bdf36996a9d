"""The refinement set of ekfac_cg: its sequences' per-sequence gradients, from memory or a model re-run.

Labels are drawn as the factors draw them (factors.batch_seed per batch), so every re-run sees the same F.
The per-sequence gradients G are kept in memory when they fit `cache_bytes`; else the activations a and
output gradients g (G formed per product); else the model is re-run every product.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .batching import MAX_TOKENS, batch_seed, micro_batch_tokens
from .data import split_batch
from .hooks import LayerCapture
from .model import output_device

# Per-sequence gradients formed at once from cached or recomputed (a, g): b sequences × all layers.
GROUP_BYTES = 2**28
CACHE_MODES = ("gradients", "activations", "recompute")


def captured_pairs(
    model, layers, batches: Sequence[dict], fisher: str, seed: int, dtype, max_tokens, rotations: dict | None = None
) -> Iterator:
    """{layer: (a, g)} per micro-batch, with the labels factors.fit_factor_sums draws for the same batches;
    with `rotations` in the Kronecker eigenbasis, (a Q_A, g Q_S), so G comes out as Q_Sᵀ G Q_A."""
    max_tokens = micro_batch_tokens(model, max_tokens)
    generator = torch.Generator(device=output_device(model))
    current: dict = {}
    rotated: dict = {}  # gate_proj and up_proj share their input and Q_A: rotate it once

    def keep(name, a, g):
        if rotations is not None:
            q_a, q_s = rotations[name]
            if (id(a), id(q_a)) not in rotated:
                rotated[id(a), id(q_a)] = a @ q_a  # (B, T, d_in)
            a, g = rotated[id(a), id(q_a)], g @ q_s  # (B, T, d_in), (B, T, d_out)
        current[name] = (a, g)

    with LayerCapture(model, layers, keep, dtype) as capture:
        for index, batch in enumerate(batches):
            generator.manual_seed(batch_seed(seed, index))
            for micro in split_batch(batch, max_tokens):
                capture.run(micro, fisher, generator)
                yield dict(current)
                current.clear()
                rotated.clear()


class RefinementSet:
    """The refinement sequences' per-sequence gradients {layer: (b, d_out·d_in)}, group by group
    (in the Kronecker eigenbasis given `rotations`)."""

    def __init__(
        self,
        model,
        layers,
        batches,
        fisher,
        seed,
        dtype,
        cache_bytes,
        max_tokens=MAX_TOKENS,
        mode="auto",
        progress=True,
        rotations=None,
    ):
        self.layers, self.dtype = layers, dtype
        self._rerun = lambda: captured_pairs(model, layers, batches, fisher, seed, dtype, max_tokens, rotations)
        self.n_sequences = sum(int((b["attention_mask"].sum(1) > 0).sum()) for b in batches)
        self.parameters = sum(layer.d_out * layer.d_in_total for layer in layers.values())
        size = torch.finfo(dtype).bits // 8
        tokens = sum(b["attention_mask"].numel() for b in batches)
        width = sum(layer.d_out + layer.d_in_total for layer in layers.values())
        self.bytes = {"gradients": self.n_sequences * self.parameters * size, "activations": tokens * width * size}
        if mode == "auto":  # G makes the fastest steps; a and g are smaller when sequences are shorter than layers
            mode = next((m for m in ("gradients", "activations") if self.bytes[m] <= cache_bytes), "recompute")
        if mode not in CACHE_MODES:
            raise ValueError(f"refinement cache mode must be 'auto' or one of {CACHE_MODES}, got {mode!r}.")
        self.mode = mode
        self._cache = None
        if self.mode != "recompute":
            pairs = tqdm(self._rerun(), desc="capture refinement set", unit="micro-batch", disable=not progress)
            self._cache = [self._flat(p) for p in pairs] if self.mode == "gradients" else list(pairs)

    def describe(self) -> str:
        gb = {m: f"{b / 2**30:.3g} GB" for m, b in self.bytes.items()}
        return (
            f"ekfac_cg refinement set: {self.n_sequences} sequences, {self.parameters} parameters; per-sequence "
            f"gradients {gb['gradients']}, activations {gb['activations']}: mode {self.mode!r} "
            + {
                "gradients": "(per-sequence gradients cached: no model pass per step)",
                "activations": "(a and g cached: no model pass per step, G formed per step)",
                "recompute": "(nothing fits the cache: one model pass over the set per step)",
            }[self.mode]
        )

    def _flat(self, pairs: dict) -> dict[str, torch.Tensor]:
        return {name: (g.transpose(1, 2) @ a).flatten(1) for name, (a, g) in pairs.items()}  # (B, d_out·d_in)

    def gradients(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.mode == "gradients":
            yield from self._cache
            return
        step = max(1, GROUP_BYTES // (self.parameters * torch.finfo(self.dtype).bits // 8))
        for pairs in self._cache if self.mode == "activations" else self._rerun():
            rows = next(iter(pairs.values()))[0].shape[0]
            for start in range(0, rows, step):
                yield self._flat({n: (a[start : start + step], g[start : start + step]) for n, (a, g) in pairs.items()})
