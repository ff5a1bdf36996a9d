"""Scoring candidate sequences against every preconditioned query at once.

influence(q, z) = Σ_layers ⟨P_q, G_z⟩ with P_q the preconditioned query
gradient and G_z = Σ_t g_t a_tᵀ the candidate's summed-loss gradient; the
per-token split is ⟨P_q, g_t a_tᵀ⟩ = g_tᵀ P_q a_t, which sums to the total.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import estimators, names
from .batching import MAX_TOKENS, micro_batch_tokens
from .containers import Preconditioned
from .data import split_batch
from .factors import sequence_gradients
from .hooks import LayerCapture
from .model import TrackedLayer, input_device, layer_devices


@dataclass
class Scores:
    """total (N, Q) = per_layer (N, Q, L) summed over L; layers name the L columns."""

    total: torch.Tensor
    per_layer: torch.Tensor
    layers: list[str]


def _sequence_scores(a, g, variants: list[dict]) -> list[torch.Tensor]:
    """Per-sequence contributions (B, Q_v) of one layer for each variant's factors.

    Full-rank variants share one pass over the per-sequence gradients G = gᵀa;
    low-rank ones never form G.
    """
    out: list = [_token_scores(a, g, f).sum(1) if names.LEFT in f else None for f in variants]
    full = [i for i, f in enumerate(variants) if names.LEFT not in f]
    if full:
        matrices = [variants[i][names.PRECONDITIONED].flatten(1) for i in full]  # (Q_v, d_out·d_in) each
        parts: list[list] = [[] for _ in full]
        for grad in sequence_gradients(g, a):  # (b, d_out, d_in)
            flat = grad.flatten(1)
            for part, matrix in zip(parts, matrices):
                part.append(flat @ matrix.T)  # (b, Q_v)
        for i, part in zip(full, parts):
            out[i] = torch.cat(part)
    return out


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


def gram_norm2(a, g) -> torch.Tensor:
    """‖Σ_t g_t a_tᵀ‖²_F = Σ_{t,t'} (g_t·g_t')(a_t·a_t') without forming the gradient: (B,)."""
    return ((g @ g.transpose(1, 2)) * (a @ a.transpose(1, 2))).sum((1, 2))


def metric_norm2(a, g, metric: dict) -> torch.Tensor:
    """‖(G + λ)^{-1/2} Σ_t g_t a_tᵀ‖² in the damped EK-FAC metric = Σ (Q_Sᵀ G Q_A)² / (Λ + λ): (B,)."""
    rotated_a, rotated_g = a @ metric[names.METRIC_ROTATION_A], g @ metric[names.METRIC_ROTATION_S]
    denominator = metric[names.METRIC_DENOMINATOR]
    return torch.cat([(grad.square() / denominator).sum((1, 2)) for grad in sequence_gradients(rotated_g, rotated_a)])


def _candidate_norms(pres: list[Preconditioned], devices, dtype) -> list:
    """Per variant: None (no normalisation), "euclidean" (cosine) or its metric on the layers' devices (ekfac_cosine)."""
    out = []
    for pre in pres:
        if not estimators.get(pre.estimator).unit_norm:
            out.append(None)
        elif estimators.get(pre.estimator).curvature is None:
            out.append("euclidean")
        elif not pre.metric:
            raise ValueError(
                f"the preconditioned queries of {pre.estimator!r} lack the candidates' metric; recompute them."
            )
        else:
            out.append(
                {m: {k: t.to(dtype=dtype, device=devices[m]) for k, t in f.items()} for m, f in pre.metric.items()}
            )
    return out


def _run(model, layers, pres: list[Preconditioned], batches, per_token: bool, dtype, desc, progress, max_tokens):
    """Yield per micro-batch and variant: {layer: contributions}, and the candidates' norms (B,) per variant
    (None for a variant that is not unit-normalised)."""
    devices, home = layer_devices(layers), input_device(model)
    max_tokens = micro_batch_tokens(model, max_tokens)
    factor_sets = []
    for pre in pres:
        missing = set(layers) - set(pre.layers)
        if missing:
            raise ValueError(f"the preconditioned queries lack tracked layers {sorted(missing)[:3]}; recompute them.")
        factor_sets.append(
            {m: {k: t.to(dtype=dtype, device=devices[m]) for k, t in pre.layers[m].items()} for m in layers}
        )
    kinds = _candidate_norms(pres, devices, dtype)
    contributions: list[dict] = [{} for _ in pres]
    norms: list[dict] = [{} for _ in pres]

    def on_pair(name, a, g):
        variants = [factors[name] for factors in factor_sets]
        if per_token:
            values = [_token_scores(a, g, f) for f in variants]
        else:
            values = _sequence_scores(a, g, variants)
        for out, value in zip(contributions, values):
            out[name] = value.to(home)  # one device for the sums over layers
        euclidean = None
        for kind, out in zip(kinds, norms):
            if kind == "euclidean":
                euclidean = gram_norm2(a, g).to(home) if euclidean is None else euclidean
                out[name] = euclidean
            elif kind is not None:
                out[name] = metric_norm2(a, g, kind[name]).to(home)

    with LayerCapture(model, layers, on_pair, dtype) as capture:
        for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
            for micro in split_batch(batch, max_tokens):
                capture.run(micro)
                yield (
                    [dict(c) for c in contributions],
                    [torch.sqrt(sum(n.values())) if kind is not None else None for kind, n in zip(kinds, norms)],
                )


def score_many(
    model,
    layers: dict[str, TrackedLayer],
    pres: Mapping[str, Preconditioned],
    batches: Iterable[dict],
    dtype=torch.float32,
    progress: bool = True,
    max_tokens: int | str | None = MAX_TOKENS,
) -> dict[str, Scores]:
    """`score_candidates` for several preconditioned query sets (estimators, ranks) in one model pass."""
    labels = list(pres)
    per_layer: dict[str, list] = {label: [] for label in labels}
    for variants, norms in _run(
        model, layers, list(pres.values()), batches, False, dtype, "scores", progress, max_tokens
    ):
        for label, contributions, norm in zip(labels, variants, norms):
            stacked = torch.stack([contributions[name] for name in layers], dim=-1)  # (B, Q, L)
            if norm is not None:
                stacked = stacked / norm.clamp(min=1e-30)[:, None, None]
            if not torch.isfinite(stacked).all():
                raise FloatingPointError("a candidate's score is NaN or Inf; check the model and factors.")
            per_layer[label].append(stacked.cpu())
    out = {}
    for label, parts in per_layer.items():
        stacked = torch.cat(parts) if parts else torch.zeros(0, len(pres[label].query_ids), len(layers))
        out[label] = Scores(stacked.sum(-1), stacked, list(layers))
    return out


def score_candidates(
    model,
    layers: dict[str, TrackedLayer],
    pre: Preconditioned,
    batches: Iterable[dict],
    dtype=torch.float32,
    progress: bool = True,
    max_tokens: int | str | None = MAX_TOKENS,
) -> Scores:
    """Influence of every candidate sequence on every query: total and per layer."""
    return score_many(model, layers, {"": pre}, batches, dtype, progress, max_tokens)[""]


def scores_table(scores: Scores, seq_ids: list[str], query_ids: list[str]) -> pd.DataFrame:
    """Long table: query_id, seq_id, influence, and one `layer:<module>` column per tracked layer."""
    n_seq, n_query = len(seq_ids), len(query_ids)
    table = pd.DataFrame(
        {
            "query_id": [q for _ in seq_ids for q in query_ids],
            "seq_id": [s for s in seq_ids for _ in query_ids],
            "influence": scores.total.reshape(-1).double().numpy(),
        }
    )
    # explicit layer count: an empty shard has (0, Q, L) scores, and reshape(0, -1) is ambiguous
    per_layer = scores.per_layer.reshape(n_seq * n_query, len(scores.layers)).double().numpy()
    layers = pd.DataFrame(per_layer, columns=[names.LAYER_PREFIX + name for name in scores.layers])
    return pd.concat([table, layers], axis=1)


def token_scores(
    model,
    layers: dict[str, TrackedLayer],
    pre: Preconditioned,
    batches: Iterable[dict],
    dtype=torch.float32,
    progress: bool = True,
    max_tokens: int | str | None = MAX_TOKENS,
) -> list[torch.Tensor]:
    """Per-token influence (T_i, Q) of each candidate, padding removed; sums to its total score."""
    out = []
    for (contributions,), (norm,) in _run(
        model, layers, [pre], batches, True, dtype, "token scores", progress, max_tokens
    ):
        total = sum(contributions.values())  # (B, T, Q)
        if norm is not None:
            total = total / norm.clamp(min=1e-30)[:, None, None]
        out.extend(row for row in total.cpu())
    return out
