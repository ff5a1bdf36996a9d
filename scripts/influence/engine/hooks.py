"""Capture each tracked layer's inputs `a` and output gradients `g` per batch.

For y = W a (+ b) the weight gradient of a sequence is G = Σ_t g_t a_tᵀ, so
(a, g) per token is all any factor or score needs. The model is frozen:
autograd then propagates only input gradients (one matmul per layer instead
of two) and never materialises weight gradients that nothing reads. The
first tracked outputs become leaves, so nothing below them is differentiated.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from .data import summed_loss
from .model import TrackedLayer, input_device

PairConsumer = Callable[[str, torch.Tensor, torch.Tensor], None]  # (module, a (B,T,d_in), g (B,T,d_out))


class LayerCapture:
    """Context manager: forward hooks on the tracked layers, released on exit.

    `a` is cast to `dtype`, gets a constant 1 column for a bias, and is zero at
    padding; layers fed the same input tensor (gate_proj and up_proj) receive
    the same `a` object, so consumers can compute shared work once.
    """

    def __init__(self, model, layers: dict[str, TrackedLayer], on_pair: PairConsumer, dtype=torch.float32):
        self.model, self.layers, self.on_pair, self.dtype = model, layers, on_pair, dtype
        self._handles: list = []
        self._pending: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (raw input, a)
        self._mask: torch.Tensor | None = None  # (B, T)

    def __enter__(self) -> LayerCapture:
        self.model.eval().requires_grad_(False)
        for name, layer in self.layers.items():
            self._handles.append(layer.module.register_forward_hook(partial(self._forward_hook, name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()

    def run(self, batch: dict, fisher: str = "empirical", generator: torch.Generator | None = None) -> torch.Tensor:
        """Forward and backward one batch; the consumer sees every layer's (a, g)."""
        batch = {k: v.to(input_device(self.model)) for k, v in batch.items()}
        self._mask = batch["attention_mask"].to(self.dtype)
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = summed_loss(logits, batch["labels"].to(logits.device), fisher, generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss of a batch is {loss.item()}; check the model weights and dtype.")
        del logits
        loss.backward()
        for name in list(self._pending):  # a layer that does not reach the loss has g = 0
            raw, a = self._pending.pop(name)
            self.on_pair(name, a, a.new_zeros(*a.shape[:2], self.layers[name].d_out))
        return loss.detach()

    def _forward_hook(self, name: str, module, inputs, output):
        self._pending[name] = (inputs[0], self._activation(inputs[0], self.layers[name].has_bias))
        if not output.requires_grad:  # the first tracked layers: start the graph here
            output = output.detach().requires_grad_(True)
        output.register_hook(partial(self._gradient_hook, name))
        return output

    def _activation(self, x: torch.Tensor, has_bias: bool) -> torch.Tensor:
        for raw, a in self._pending.values():  # holding `raw` keeps its memory from reuse, so `is` is safe
            if raw is x and a.shape[-1] == x.shape[-1] + int(has_bias):
                return a
        a = x.detach().to(self.dtype)  # (B, T, d_in)
        if has_bias:
            a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=-1)  # (B, T, d_in + 1)
        return a * self._mask.to(a.device)[..., None]  # layers may sit on several GPUs

    def _gradient_hook(self, name: str, grad: torch.Tensor) -> None:
        _, a = self._pending.pop(name)
        g = grad.detach().to(self.dtype) * self._mask[..., None]  # (B, T, d_out)
        self.on_pair(name, a, g)


def per_sequence_gradients(model, layers: dict[str, TrackedLayer], batch: dict, dtype=torch.float64) -> dict:
    """G_n = Σ_t g_t a_tᵀ per sequence and layer: {name: (B, d_out, d_in [+1])}.

    The summed loss of `batch` uses its own labels. Used for query gradients
    and as the reference the factor code is tested against.
    """
    grads = {}

    def keep(name, a, g):
        grads[name] = g.transpose(1, 2) @ a  # (B, d_out, d_in)

    with LayerCapture(model, layers, keep, dtype) as capture:
        capture.run(batch)
    return grads
