"""Scoring candidate sequences against every preconditioned query at once.

influence(q, z) = Σ_layers ⟨P_q, G_z⟩ with P_q the preconditioned query
gradient and G_z = Σ_t g_t a_tᵀ the candidate's summed-loss gradient; the
per-token split is ⟨P_q, g_t a_tᵀ⟩ = g_tᵀ P_q a_t, which sums to the total.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import names
from .data import split_batch
from .factors import MAX_TOKENS, sequence_gradients
from .hooks import LayerCapture
from .model import TrackedLayer
from .precondition import Preconditioned


@dataclass
class Scores:
    """total (N, Q) = per_layer (N, Q, L) summed over L; layers name the L columns."""

    total: torch.Tensor
    per_layer: torch.Tensor
    layers: list[str]


def _sequence_scores(a, g, factors: dict, want_norm: bool):
    """Per-sequence contributions (B, Q) of one layer, and ‖G‖² (B,) if wanted."""
    if names.LEFT in factors:
        return _token_scores(a, g, factors).sum(1), (_gram_norm2(a, g) if want_norm else None)
    matrix = factors[names.PRECONDITIONED].flatten(1)  # (Q, d_out·d_in)
    scores, norms = [], []
    for _, grad in sequence_gradients(g, a):  # (b, d_out, d_in)
        scores.append(grad.flatten(1) @ matrix.T)  # (b, Q)
        if want_norm:
            norms.append(grad.square().sum((1, 2)))
    return torch.cat(scores), (torch.cat(norms) if want_norm else None)


def _token_scores(a, g, factors: dict) -> torch.Tensor:
    """Per-token contributions (B, T, Q) of one layer: g_tᵀ P_q a_t."""
    if names.LEFT in factors:
        left, right = factors[names.LEFT], factors[names.RIGHT]  # (Q, d_out, r), (Q, d_in, r)
        n_queries, _, rank = left.shape
        g_left = g @ left.permute(1, 0, 2).flatten(1)  # (B, T, Q·r)
        a_right = a @ right.permute(1, 0, 2).flatten(1)  # (B, T, Q·r)
        return (g_left * a_right).unflatten(-1, (n_queries, rank)).sum(-1)  # (B, T, Q)
    matrix = factors[names.PRECONDITIONED]  # (Q, d_out, d_in)
    n_queries, _, d_in = matrix.shape
    g_matrix = g @ matrix.permute(1, 0, 2).flatten(1)  # (B, T, Q·d_in)
    return (g_matrix.unflatten(-1, (n_queries, d_in)) * a[:, :, None, :]).sum(-1)  # (B, T, Q)


def _gram_norm2(a, g) -> torch.Tensor:
    """‖Σ_t g_t a_tᵀ‖²_F = Σ_{t,t'} (g_t·g_t')(a_t·a_t') without forming the gradient: (B,)."""
    return ((g @ g.transpose(1, 2)) * (a @ a.transpose(1, 2))).sum((1, 2))


def _run(model, layers, pre: Preconditioned, batches, per_token: bool, dtype, desc, progress, max_tokens):
    """Yield per batch: {layer: contributions} and the candidates' squared gradient norms (cosine)."""
    device = next(model.parameters()).device
    factors = {m: {k: t.to(dtype=dtype, device=device) for k, t in f.items()} for m, f in pre.layers.items()}
    missing = set(layers) - set(factors)
    if missing:
        raise ValueError(f"the preconditioned queries lack tracked layers {sorted(missing)[:3]}; recompute them.")
    want_norm = pre.estimator == "cosine"
    contributions, norms = {}, {}

    def on_pair(name, a, g):
        if per_token:
            contributions[name] = _token_scores(a, g, factors[name])
            norms[name] = _gram_norm2(a, g) if want_norm else None
        else:
            contributions[name], norms[name] = _sequence_scores(a, g, factors[name], want_norm)

    with LayerCapture(model, layers, on_pair, dtype) as capture:
        for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
            for micro in split_batch(batch, max_tokens):
                capture.run(micro)
                norm = torch.sqrt(sum(norms.values())) if want_norm else None  # (B,)
                yield dict(contributions), norm


def score_candidates(
    model, layers: dict[str, TrackedLayer], pre: Preconditioned, batches: Iterable[dict],
    dtype=torch.float32, progress: bool = True, max_tokens: int | None = MAX_TOKENS,
) -> Scores:
    """Influence of every candidate sequence on every query: total and per layer."""
    per_layer = []
    for contributions, norm in _run(model, layers, pre, batches, False, dtype, "scores", progress, max_tokens):
        stacked = torch.stack([contributions[name] for name in layers], dim=-1)  # (B, Q, L)
        if norm is not None:
            stacked = stacked / norm.clamp(min=1e-30)[:, None, None]
        if not torch.isfinite(stacked).all():
            raise FloatingPointError("a candidate's score is NaN or Inf; check the model and factors.")
        per_layer.append(stacked.cpu())
    per_layer = torch.cat(per_layer) if per_layer else torch.zeros(0, len(pre.query_ids), len(layers))
    return Scores(per_layer.sum(-1), per_layer, list(layers))


LAYER_PREFIX = "layer:"


def scores_table(scores: Scores, seq_ids: list[str], query_ids: list[str]) -> pd.DataFrame:
    """Long table: query_id, seq_id, influence, and one `layer:<module>` column per tracked layer."""
    n_seq, n_query = len(seq_ids), len(query_ids)
    table = pd.DataFrame({
        "query_id": [q for _ in seq_ids for q in query_ids],
        "seq_id": [s for s in seq_ids for _ in query_ids],
        "influence": scores.total.reshape(-1).double().numpy(),
    })
    per_layer = scores.per_layer.reshape(n_seq * n_query, -1).double().numpy()
    layers = pd.DataFrame(per_layer, columns=[LAYER_PREFIX + name for name in scores.layers])
    return pd.concat([table, layers], axis=1)


def token_scores(
    model, layers: dict[str, TrackedLayer], pre: Preconditioned, batches: Iterable[dict],
    dtype=torch.float32, progress: bool = True, max_tokens: int | None = MAX_TOKENS,
) -> list[torch.Tensor]:
    """Per-token influence (T_i, Q) of each candidate, padding removed; sums to its total score."""
    out = []
    for contributions, norm in _run(model, layers, pre, batches, True, dtype, "token scores", progress, max_tokens):
        total = sum(contributions.values())  # (B, T, Q)
        if norm is not None:
            total = total / norm.clamp(min=1e-30)[:, None, None]
        out.extend(row for row in total.cpu())
    return out
