"""Dense float64 oracles: explicit per-example gradients, Fisher matrices and solves."""

import copy

import torch
from influence.engine.data import summed_loss
from influence.engine.model import select_layers


def autograd_gradients(model, batch: dict, fisher: str = "empirical", labels: torch.Tensor | None = None) -> dict:
    """{layer: (N, d_out, d_in [+1])} from one backward pass per sequence, padding stripped."""
    ref = copy.deepcopy(model).eval().requires_grad_(True)
    layers = select_layers(ref)
    out = {name: [] for name in layers}
    for row in range(batch["input_ids"].shape[0]):
        length = int(batch["attention_mask"][row].sum())
        ids = batch["input_ids"][row : row + 1, :length]
        lab = (batch["labels"] if labels is None else labels)[row : row + 1, :length]
        ref.zero_grad()
        summed_loss(ref(input_ids=ids).logits, lab, fisher).backward()
        for name, layer in layers.items():
            grad = layer.module.weight.grad
            grad = grad.T if layer.kind == "conv1d" else grad
            if layer.has_bias:
                grad = torch.cat([grad, layer.module.bias.grad[:, None]], dim=1)
            out[name].append(grad.clone())
    return {name: torch.stack(grads) for name, grads in out.items()}


def fisher(grads: torch.Tensor) -> torch.Tensor:
    """F = mean_n vec(G_n) vec(G_n)ᵀ with row-major vec, so vec(Q_Sᵀ G Q_A) = (Q_S ⊗ Q_A)ᵀ vec(G)."""
    flat = grads.flatten(1)  # (N, d_out·d_in)
    return flat.T @ flat / flat.shape[0]


def solve(matrix: torch.Tensor, damping: float, grads: torch.Tensor) -> torch.Tensor:
    """(M + λI)⁻¹ vec(G) for each G of a (Q, d_out, d_in) batch, as a dense solve."""
    eye = torch.eye(matrix.shape[0], dtype=matrix.dtype)
    return torch.linalg.solve(matrix + damping * eye, grads.flatten(1).T).T.reshape(grads.shape)
