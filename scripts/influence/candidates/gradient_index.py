"""The gradient index in the workflow: which sequences are indexed, one shard's build, query tables,
and the two index analyses (TF-IDF recall over the whole indexed corpus, projection accuracy).

Tables:
  top.parquet         query_id, seq_id, influence (the projected estimate), influence_rank (1 = largest)
  candidates.parquet  query_id, seq_id, index_score, index_rank: the same rows, named for aggregate_scores
  search.parquet      query_id, method, recall_at_n (share of the exact search's top-n the method found)
  scores.parquet      query_id, seq_id, influence: every indexed sequence (only with index.score_matrix)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..engine import estimators
from ..engine.containers import Preconditioned
from ..engine.index import load_index, project_corpus, projector_for, recall_at_n, search
from ..engine.projection import ProjectionSpec, Projector
from ..engine.sequences import TokenStore, fitting_sample, ordered_batches, shard
from ..stats import spearman


def indexed_sequences(store: TokenStore, max_sequences: int | None, seed: int) -> list[str]:
    """The seeded subset of `max_sequences` corpus sequences (all of them if null), in corpus order."""
    return fitting_sample(store.table["seq_id"].tolist(), max_sequences, seed)


def build_shard(model, layers, spec: ProjectionSpec, store: TokenStore, ids: list[str], index: int, n_shards: int,
                batch_size: int, progress: bool = True, eigen: dict | None = None
                ) -> tuple[list[str], torch.Tensor, torch.Tensor]:  # fmt: skip
    """(seq_ids, vectors, norms) of the `index`-th of `n_shards` contiguous slices of `ids` (`eigen`: the
    factors' eigendecomposition, for a whitened index)."""
    order, batches = ordered_batches(store, shard(ids, index, n_shards), batch_size)
    projector = projector_for(spec, layers, eigen=eigen)
    vectors, norms = project_corpus(model, layers, projector, batches, progress=progress)
    return order, vectors, norms


def query_projector(spec: ProjectionSpec, pre: Preconditioned, modules: list[str], eigen: dict | None = None
                    ) -> Projector:  # fmt: skip
    """The projection of the index's `modules` (in the index's order), sized from the queries' tensors."""
    shapes = {}
    for name in modules:
        if name not in pre.layers:
            raise ValueError(f"the preconditioned queries lack the indexed layer {name}; recompute them.")
        parts = pre.layers[name]
        if "preconditioned" in parts:
            shapes[name] = tuple(parts["preconditioned"].shape[1:])
        else:
            shapes[name] = (parts["left"].shape[1], parts["right"].shape[1])
    return Projector(spec, shapes, eigen=eigen)


def query_index(pre: Preconditioned, fingerprint: str, paths: list, spec: ProjectionSpec, modules: list[str],
                corpus: str, top_n: int, method: str = "exact", threads: int = 1, matrix: bool = False,
                eigen: dict | None = None) -> dict:  # fmt: skip
    """Every query's top-n indexed sequences by projected score: {top, candidates, search[, scores]} tables
    (`eigen`: the eigendecomposition a whitened index was built with)."""
    seq_ids, vectors, norms = load_index(paths, spec.fingerprint(fingerprint, eigen), corpus)
    if estimators.get(pre.estimator).unit_norm:  # cosine: queries are unit norm, candidates divided here
        vectors = vectors / norms.clamp(min=1e-30)[:, None]
    queries = query_projector(spec, pre, modules, eigen).queries(pre).numpy()
    vectors = vectors.numpy()
    scores, rows = search(queries, vectors, top_n, method, threads)
    exact_rows = rows if method == "exact" else search(queries, vectors, top_n, "exact", threads)[1]
    n = scores.shape[1]
    top = pd.DataFrame(
        {
            "query_id": np.repeat(pre.query_ids, n),
            "seq_id": np.asarray(seq_ids, dtype=object)[rows.ravel()],
            "influence": scores.ravel().astype(np.float64),
            "influence_rank": np.tile(np.arange(1, n + 1), len(pre.query_ids)),
        }
    )
    out = {
        "top": top,
        "candidates": top.rename(columns={"influence": "index_score", "influence_rank": "index_rank"}),
        "search": pd.DataFrame(
            {"query_id": pre.query_ids, "method": method, "recall_at_n": recall_at_n(rows, exact_rows)}
        ),
    }
    if matrix:
        full = queries @ vectors.T  # (Q, N)
        out["scores"] = pd.DataFrame(
            {
                "query_id": np.repeat(pre.query_ids, len(seq_ids)),
                "seq_id": np.tile(np.asarray(seq_ids, dtype=object), len(pre.query_ids)),
                "influence": full.ravel().astype(np.float64),
            }
        )
    return out


def tfidf_recall_of_index(top: pd.DataFrame, tfidf_similarity: pd.DataFrame, cutoffs: list[int]) -> pd.DataFrame:
    """Per query and k: the share of the index's top-n that TF-IDF ranks within its top k of the indexed corpus.

    `tfidf_similarity` has query_id, seq_id, tfidf for every indexed sequence; ties keep corpus order.
    Columns: query_id, k, recall, n (the index's top-n), n_indexed.
    """
    rows = []
    for query_id, sims in tfidf_similarity.groupby("query_id", sort=False):
        order = np.lexsort((np.arange(len(sims)), -sims["tfidf"].to_numpy()))
        rank = dict(zip(sims["seq_id"].to_numpy()[order], range(1, len(sims) + 1)))
        wanted = top.loc[top["query_id"] == query_id, "seq_id"]
        ranks = np.array([rank.get(s, np.inf) for s in wanted])
        for k in cutoffs:
            rows.append((query_id, k, float((ranks <= k).mean()), len(wanted), len(sims)))
    return pd.DataFrame(rows, columns=["query_id", "k", "recall", "n", "n_indexed"])


# The sketches projection_accuracy compares: name -> ProjectionSpec settings (the random ones take index.kind,
# gaussian when that is eigen) and whether they are drawn at several seeds.
ACCURACY_SKETCHES = {
    "whitened": ({"whiten": True}, True),
    "plain": ({"whiten": False}, True),
    "eigen": ({"kind": "eigen", "whiten": False}, False),
}


TFIDF_ROW = (0, "tfidf", 0)  # projection_accuracy's key of the TF-IDF prefilter's ranking (no projection: k 0)


def accuracy_specs(projection: dict, ks: list[int], seeds: int) -> dict[tuple[int, str, int], ProjectionSpec]:
    """{(k, sketch, seed): spec} of every variant projection_accuracy measures: each random sketch at `seeds`
    seeds from index.seed, the eigen sketch once (it has no randomness)."""
    kind = "gaussian" if projection["kind"] == "eigen" else projection["kind"]
    first = projection["seed"]
    specs = {}
    for k in ks:
        for sketch, (settings, seeded) in ACCURACY_SKETCHES.items():
            for seed in range(first, first + (seeds if seeded else 1)):
                specs[(k, sketch, seed)] = ProjectionSpec(
                    **{**projection, "kind": kind, **settings, "k": k, "seed": seed}
                )
    return specs


def projection_accuracy(
    exact: pd.DataFrame, projected: dict[tuple[int, str, int], pd.DataFrame], top: int = 10, n: int = 40
) -> pd.DataFrame:
    """Per (k, sketch, projection seed) and query: Spearman ρ of projected against exact scores, the share of
    the exact top-`top` in the projected top-`top`, and its share in the projected top-`n` (what
    `scoring.candidates: index` rescores). Tables have query_id, seq_id, influence (larger first); the
    TF-IDF prefilter's ranking may come as TFIDF_ROW.
    Columns: k (0 for tfidf), sketch (ACCURACY_SKETCHES or tfidf), seed, query_id, spearman, top_overlap,
    recall_at_n, n."""
    rows = []
    for (k, sketch, seed), table in projected.items():
        merged = exact.merge(table, on=["query_id", "seq_id"], suffixes=("_exact", "_projected"))
        for query_id, group in merged.groupby("query_id", sort=False):
            best = set(group.nlargest(top, "influence_exact")["seq_id"])
            found = set(group.nlargest(top, "influence_projected")["seq_id"])
            kept = set(group.nlargest(n, "influence_projected")["seq_id"])
            rho = spearman(group["influence_exact"], group["influence_projected"])
            share = max(1, len(best))
            rows.append((k, sketch, seed, query_id, rho, len(best & found) / share, len(best & kept) / share, n))
    columns = ["k", "sketch", "seed", "query_id", "spearman", "top_overlap", "recall_at_n", "n"]
    return pd.DataFrame(rows, columns=columns)
