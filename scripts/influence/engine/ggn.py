"""Exact Gauss-Newton products over the tracked layers, for many vectors at once (ekfac_astra's curvature).

For a batch of sequences with summed cross-entropy over the scored positions t, the Gauss-Newton Hessian is
    G v = Σ_t J_tᵀ H_t J_t v,   H_t = diag(p_t) − p_t p_tᵀ,
J_t the Jacobian of position t's logits with respect to the tracked weights and p_t its softmax. For softmax
cross-entropy G is the true Fisher's expectation over labels, E_y[g gᵀ], without a label draw: every sequence
contributes its full rank (up to tokens × vocabulary), where a sampled-label Fisher of b sequences has rank b.

One product for Q vectors: a forward-mode JVP of the logits vmapped over the Q tangents (the primal pass is
shared), the Hessian of the softmax applied per position, and one reverse pass vmapped over the Q cotangents
(torch.func). Per vector it costs about one tangent forward and one backward of the batch; bergson's ASTRA
forms the same product one query at a time, each with its own primal pass.

Forward-mode AD needs attention kernels that support it: scaled_dot_product_attention runs its math backend
here (flash/memory-efficient kernels have no forward-AD formula); an attention implementation such as
flash_attention_2 stops with a message naming it.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from .batching import micro_batch_tokens
from .data import IGNORE, split_batch
from .model import TrackedLayer, input_device


class GaussNewton:
    """(b, {layer: (Q, d_out, d_in [+1])}) ↦ {layer: Σ_{sequences of b} G_n V}, in our gradient layout."""

    def __init__(self, model, layers: dict[str, TrackedLayer], max_tokens: int | str | None = None):
        self.model, self.layers = model, layers
        self.max_tokens = micro_batch_tokens(model, max_tokens)
        names = {id(p): n for n, p in model.named_parameters()}
        # {layer: (weight's parameter name, bias's or None)}
        self.names = {
            name: (names[id(layer.module.weight)], names[id(layer.module.bias)] if layer.has_bias else None)
            for name, layer in layers.items()
        }
        self.params = {}
        for weight, bias in self.names.values():
            self.params[weight] = model.get_parameter(weight).detach()
            if bias:
                self.params[bias] = model.get_parameter(bias).detach()

    def mean(self, batches, vectors: dict[str, torch.Tensor], rotations: dict | None = None) -> dict[str, torch.Tensor]:
        """(1/N) Σ_n G_n V over the N sequences of `batches`; with `rotations` ({layer: (Q_A, Q_S)}) V and the
        result are in the Kronecker eigenbasis (V rotated to parameter space, multiplied, rotated back)."""
        if rotations is not None:
            vectors = {name: q_s @ vectors[name] @ q_a.T for name, (q_a, q_s) in rotations.items()}
        total, sequences = None, 0
        for batch in batches:
            part = self(batch, vectors)
            total = part if total is None else {k: total[k].add_(part[k]) for k in total}
            sequences += int((batch["attention_mask"].sum(1) > 0).sum())
        if rotations is not None:
            total = {name: q_s.T @ total.pop(name) @ q_a for name, (q_a, q_s) in rotations.items()}
        return {name: t.div_(sequences) for name, t in total.items()}

    def __call__(self, batch: dict, vectors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Σ_n G_n V over the sequences of `batch`, in parameter space."""
        count = next(iter(vectors.values())).shape[0]
        tangents = self._to_params(vectors)
        out = None
        rows = None if not self.max_tokens else max(1, self.max_tokens // count)  # Q tangents per token
        for micro in split_batch(batch, rows):
            part = self._product(micro, tangents)
            out = part if out is None else {k: out[k].add_(part[k]) for k in out}
        return {name: tensor.to(vectors[name]) for name, tensor in self._from_params(out).items()}

    def _product(self, batch: dict, tangents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = input_device(self.model)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)

        def logits(params):
            return functional_call(self.model, params, (), {"input_ids": ids, "attention_mask": mask}).logits

        with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            try:
                tangent_logits = vmap(lambda t: jvp(logits, (self.params,), (t,))[1])(tangents)  # (Q, B, T, V)
            except torch.OutOfMemoryError:
                raise
            except Exception as error:  # NotImplementedError eager; dynamo's own error types when compiled
                attention = getattr(self.model.config, "_attn_implementation", "?")
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise RuntimeError(
                    f"ekfac_astra's Gauss-Newton product needs forward-mode AD through the model, which failed "
                    f"({type(error).__name__}: {first}); its attention implementation {attention!r} may have no "
                    "forward-mode formula: load the model with attn_implementation='eager' or 'sdpa'."
                ) from error
            primal, pullback = vjp(logits, self.params)
            # position t predicts token t + 1 and is scored when that label is (summed loss: weight 1)
            scored = torch.zeros(batch["labels"].shape, dtype=primal.dtype, device=primal.device)
            scored[:, :-1] = (batch["labels"][:, 1:] != IGNORE).to(scored)
            probs = torch.softmax(primal.to(torch.promote_types(primal.dtype, torch.float32)), dim=-1)
            hessian = probs * (tangent_logits - (probs * tangent_logits).sum(-1, keepdim=True))
            del tangent_logits
            cotangents = (hessian * scored[..., None]).to(primal.dtype)
            return vmap(pullback)(cotangents)[0]

    def _to_params(self, vectors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tangents = {}
        for name, layer in self.layers.items():
            weight, bias = self.names[name]
            v = vectors[name].to(self.params[weight])
            w = v[..., : layer.d_in]
            tangents[weight] = w.transpose(-1, -2) if layer.kind == "conv1d" else w
            if bias:
                tangents[bias] = v[..., layer.d_in]
        return {k: t.contiguous() for k, t in tangents.items()}

    def _from_params(self, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, layer in self.layers.items():
            weight, bias = self.names[name]
            w = grads[weight].transpose(-1, -2) if layer.kind == "conv1d" else grads[weight]
            out[name] = torch.cat([w, grads[bias][..., None]], dim=-1) if bias else w
        return out
