"""Attribution baselines the influence estimators are compared with, and the LiSSA iHVP.

- BM25 (Robertson et al.; k1 = 1.5, b = 0.75, idf = ln(1 + (N − df + 0.5) / (df + 0.5))) on
  scikit-learn's word tokens;
- TF-IDF cosine, the workflow's own `tfidf` weights fitted on the scored documents;
- RepSim (Li et al. 2024): cosine of the last layer's hidden state at the last real token (`repsim`),
  and two other representations so its standing does not hang on one choice: the last layer's
  hidden states mean-pooled over real tokens (`repsim_mean`), and the middle layer's at the last real
  token (`repsim_middle`);
- LiSSA (Agarwal et al. 2017): the stochastic Neumann series for (F + λI)⁻¹ v.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.feature_extraction.text import CountVectorizer
from tqdm.auto import tqdm

from ..candidates.tfidf import TOKEN_PATTERN, TfidfSettings, fit_idf, tfidf_matrix


def bm25_scores(documents: Sequence[str], queries: Sequence[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """(Q, N) Okapi BM25 score of every document for every query (query terms counted once each)."""
    vectorizer = CountVectorizer(token_pattern=TOKEN_PATTERN, lowercase=True)
    counts = vectorizer.fit_transform(documents).tocsc().astype(np.float64)  # (N, V)
    n_docs = counts.shape[0]
    lengths = np.asarray(counts.sum(axis=1)).ravel()  # (N,)
    df = np.diff(counts.indptr)  # (V,) documents containing each term
    idf = np.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
    tf = counts.tocsr()
    norm = k1 * (1 - b + b * lengths / max(lengths.mean(), 1e-12))  # (N,)
    rows = np.repeat(np.arange(n_docs), np.diff(tf.indptr))
    weights = tf.copy()
    weights.data = tf.data * (k1 + 1) / (tf.data + norm[rows]) * idf[tf.indices]
    present = (vectorizer.transform(queries) > 0).astype(np.float64)  # (Q, V)
    return np.asarray((present @ weights.T).todense())


def tfidf_scores(documents: Sequence[str], queries: Sequence[str]) -> np.ndarray:
    """(Q, N) TF-IDF cosine with IDF fitted on `documents`."""
    idf = fit_idf([list(documents)], TfidfSettings(n_features=2**20), progress=False)
    return np.asarray((tfidf_matrix(list(queries), idf) @ tfidf_matrix(list(documents), idf).T).todense())


@torch.no_grad()
@torch.no_grad()  # forward only: no autograd graph of every hidden state (GBs on a real model)
def representations(model, batches: Sequence[dict]) -> dict[str, torch.Tensor]:
    """{repsim, repsim_mean, repsim_middle: (N, d)} hidden-state representations of each sequence."""
    device = next(model.parameters()).device
    out: dict[str, list] = {"repsim": [], "repsim_mean": [], "repsim_middle": []}
    for batch in tqdm(batches, desc="repsim", unit="batch", leave=False):
        mask = batch["attention_mask"].to(device)
        states = model(input_ids=batch["input_ids"].to(device), attention_mask=mask, output_hidden_states=True)
        last_layer, middle = states.hidden_states[-1], states.hidden_states[len(states.hidden_states) // 2]  # (B, T, d)
        last = mask.sum(1) - 1  # (B,)
        rows = torch.arange(len(last), device=device)
        weights = mask[..., None].to(last_layer.dtype)  # (B, T, 1)
        out["repsim"].append(last_layer[rows, last].float().cpu())
        out["repsim_mean"].append(((last_layer * weights).sum(1) / weights.sum(1)).float().cpu())
        out["repsim_middle"].append(middle[rows, last].float().cpu())
    return {name: torch.cat(parts) for name, parts in out.items()}


def last_hidden(model, batches: Sequence[dict]) -> torch.Tensor:
    """(N, d) final hidden state at each sequence's last real token (batches from `data.pad_batch`)."""
    return representations(model, batches)["repsim"]


def repsim_scores(model, query_batches: Sequence[dict], document_batches: Sequence[dict]) -> dict[str, np.ndarray]:
    """{representation: (Q, N) cosine between query and document representations} (`representations`)."""
    queries, documents = representations(model, query_batches), representations(model, document_batches)
    out = {}
    for name in queries:
        q = torch.nn.functional.normalize(queries[name], dim=1)
        d = torch.nn.functional.normalize(documents[name], dim=1)
        out[name] = (q @ d.T).double().numpy()
    return out


def lissa(
    fvp: Callable[[torch.Tensor, np.random.Generator], torch.Tensor],
    v: torch.Tensor,
    damping: float,
    scale: float,
    depth: int,
    seed: int = 0,
) -> torch.Tensor:
    """LiSSA estimate of (F + λI)⁻¹ v for the columns of v (P, K).

    h_0 = v, h_j = v + h_{j-1} − (F̂_j h_{j-1} + λ h_{j-1}) / s, estimate h_J / s, with F̂_j a fresh
    mini-batch Fisher-vector product `fvp(h, rng)`. Converges when s exceeds the largest eigenvalue
    of F + λI; the error shrinks as (1 − (λ + μ_min)/s)^J, so small damping needs deep recursions.
    """
    if scale <= 0 or depth < 1:
        raise ValueError(f"LiSSA needs scale > 0 and depth >= 1 (got {scale}, {depth}).")
    rng = np.random.default_rng(seed)
    h = v.clone()
    for _ in range(depth):
        h = v + h - (fvp(h, rng) + damping * h) / scale
    return h / scale
