"""The compressed gradient index: projected candidate gradients, stored in shards and searched by queries.

The index holds projected gradients R G_z Rᵀ of the candidates' summed loss
(engine/projection.py: the factors' top eigenvectors by default, or seeded random
matrices, optionally whitened); the
preconditioning stays on the query side, so one index serves every estimator
and rank: score(q, z) ≈ ⟨R P_q Rᵀ, R G_z Rᵀ⟩.
Each shard also keeps the exact Frobenius norm ‖G_z‖ over all tracked layers
(cosine divides by it), computed without forming G_z.

A shard records the model fingerprint, the projection and the corpus digest;
a query is refused against an index of another model, layer set or
projection, and an index of another corpus is refused until rebuilt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import names
from .batching import MAX_TOKENS, micro_batch_tokens
from .data import split_batch
from .files import load_tensors, read_metadata, save_tensors
from .hooks import LayerCapture
from .model import TrackedLayer, input_device, layer_devices
from .projection import ProjectionSpec, Projector
from .scores import gram_norm2
from .sequences import SEQUENCES, TOKENS

VECTORS, NORMS = "vectors", "norms"
DTYPES = {"float16": torch.float16, "float32": torch.float32}
SEARCHES = ("exact", "ivf", "hnsw")


def projector_for(
    spec: ProjectionSpec, layers: dict[str, TrackedLayer], dtype=torch.float32, eigen: dict | None = None
) -> Projector:
    shapes = {name: (layer.d_out, layer.d_in_total) for name, layer in layers.items()}
    return Projector(spec, shapes, dtype, layer_devices(layers), eigen)


def project_corpus(
    model,
    layers: dict[str, TrackedLayer],
    projector: Projector,
    batches: Iterable[dict],
    dtype=torch.float32,
    progress: bool = True,
    max_tokens: int | str | None = MAX_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(vectors (N, width), norms (N,)) of the sequences of `batches`, in batch order: one forward and
    backward pass per micro-batch, each layer's (a, g) projected as it is captured."""
    (vectors,), norms = _project(model, layers, [projector], [None], batches, dtype, progress, max_tokens)
    return vectors, norms


def projected_scores(
    model,
    layers: dict[str, TrackedLayer],
    projectors: list[Projector],
    queries: list[torch.Tensor],
    batches: Iterable[dict],
    dtype=torch.float32,
    progress: bool = True,
    max_tokens: int | str | None = MAX_TOKENS,
) -> list[torch.Tensor]:
    """Per projector, the (N, Q) inner products of its projected `queries` (Q, width) with every sequence of
    `batches`, from one shared pass (no vector is kept: large k over many sequences would not fit)."""
    scores, _ = _project(model, layers, projectors, queries, batches, dtype, progress, max_tokens)
    return scores


def _project(model, layers, projectors, queries, batches, dtype, progress, max_tokens):
    """([per projector: vectors (N, width), or their scores against its queries (N, Q)], norms (N,)).

    With queries, each layer's block is scored as soon as it is captured (scores are linear in the blocks)
    and dropped, so memory holds one layer's block per projector, not every layer's.
    """
    home, max_tokens = input_device(model), micro_batch_tokens(model, max_tokens)
    query_blocks = [None if q is None else p.query_blocks(q) for p, q in zip(projectors, queries)]
    blocks: list[dict[str, torch.Tensor]] = [{} for _ in projectors]
    scores: list[torch.Tensor | int] = [0 for _ in projectors]
    norms: dict[str, torch.Tensor] = {}
    parts: list[list[torch.Tensor]] = [[] for _ in projectors]
    norm_parts = []

    def on_pair(name, a, g):
        for i, projector in enumerate(projectors):
            block = projector.candidates(name, a, g)  # (B, k_out·k_in)
            if not torch.isfinite(block).all():
                raise FloatingPointError(
                    f"layer {name}: a projected candidate gradient is NaN or Inf; check the model weights and dtype."
                )
            if query_blocks[i] is None:
                blocks[i][name] = block.to(home)
            else:
                scores[i] = scores[i] + (block @ query_blocks[i][name].to(block).T).to(home)  # (B, Q)
        norms[name] = gram_norm2(a, g).to(home)  # (B,)

    with LayerCapture(model, layers, on_pair, dtype) as capture:
        for batch in tqdm(batches, desc="index", disable=not progress, unit="batch"):
            for micro in split_batch(batch, max_tokens):
                capture.run(micro)
                for i, projector in enumerate(projectors):
                    parts[i].append((projector.combine(blocks[i]) if query_blocks[i] is None else scores[i]).cpu())
                    scores[i] = 0
                norm_parts.append(torch.sqrt(sum(norms.values())).cpu())
    if not norm_parts:
        empty = [torch.zeros(0, p.width if q is None else len(q), dtype=dtype) for p, q in zip(projectors, queries)]
        return empty, torch.zeros(0, dtype=dtype)
    return [torch.cat(part) for part in parts], torch.cat(norm_parts)


def corpus_digest(corpus_dir: str | Path) -> str:
    """A digest of the tokenised corpus (token ids and the sequence table's ids, offsets and lengths)."""
    import pandas as pd

    corpus_dir = Path(corpus_dir)
    digest = hashlib.sha256(np.load(corpus_dir / TOKENS, mmap_mode="r").tobytes())
    table = pd.read_parquet(corpus_dir / SEQUENCES, columns=["seq_id", "offset", "n_tokens"])
    digest.update("\n".join(table["seq_id"].astype(str)).encode())
    digest.update(table[["offset", "n_tokens"]].to_numpy(np.int64).tobytes())
    return digest.hexdigest()[:16]


def save_shard(
    path, vectors, norms, seq_ids: list[str], spec: ProjectionSpec, model_fingerprint: str, eigen=None, **meta
) -> None:
    """One shard of the index: vectors in the index dtype, norms in float32, and what they were built from
    (`eigen`: the eigendecomposition a whitened index was built with)."""
    save_tensors(
        path,
        {VECTORS: vectors, NORMS: norms.float()},
        **{
            names.META_KIND: names.KIND_INDEX,
            names.META_MODEL: model_fingerprint,
            "index_fingerprint": spec.fingerprint(model_fingerprint, eigen),
            "projection": spec.as_dict(),
            "seq_ids": list(seq_ids),
            **meta,
        },
    )


def load_index(
    paths: list, fingerprint: str, corpus: str | None = None
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(seq_ids, vectors (N, width) float32, norms (N,)) of every shard, in shard order.

    `fingerprint` is ProjectionSpec.fingerprint of the queries' model, projection and (whitened) factors;
    a shard built with another model, layer set, projection or factor fit is refused naming both, a shard of another corpus
    (`corpus`, corpus_digest of the current one) is refused until it is rebuilt.
    """
    ids, vectors, norms = [], [], []
    for path in paths:
        meta = read_metadata(path)
        if meta.get("index_fingerprint") != fingerprint:
            raise ValueError(
                f"the index shard {path} was built with another model, layer set, projection or (whitened) factor "
                f"fit (index fingerprint {meta.get('index_fingerprint')}, model {meta.get(names.META_MODEL)}, projection "
                f"{meta.get('projection')}); the queries need index fingerprint {fingerprint}. Rebuild the index."
            )
        if corpus is not None and meta.get("corpus_digest") != corpus:
            raise ValueError(
                f"the index shard {path} was built on another corpus (digest {meta.get('corpus_digest')}, the "
                f"corpus now has {corpus}); delete the index directory and rerun to rebuild it."
            )
        tensors, meta = load_tensors(path, names.KIND_INDEX)
        ids.extend(meta["seq_ids"])
        vectors.append(tensors[VECTORS].float())
        norms.append(tensors[NORMS].float())
    return ids, torch.cat(vectors), torch.cat(norms)


def search(queries: np.ndarray, vectors: np.ndarray, n: int, method: str = "exact", threads: int = 1, seed: int = 0):
    """(scores (Q, n), row indices (Q, n)) of the n largest inner products per query, best first, via faiss.

    `exact` is a flat inner-product index; `ivf` (inverted lists, √N cells, 8 probed) and `hnsw`
    (graph, 32 links) are approximate: measure their recall against `exact` (recall_at_n).
    """
    import faiss

    if method not in SEARCHES:
        raise ValueError(f"index.search must be one of {SEARCHES}, got {method!r}.")
    faiss.omp_set_num_threads(threads)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = min(n, len(vectors))
    width = vectors.shape[1]
    if method == "exact":
        index = faiss.IndexFlatIP(width)
    elif method == "ivf":
        cells = max(1, int(len(vectors) ** 0.5))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(width), width, cells, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(vectors)
        index.nprobe = min(8, cells)
    else:
        index = faiss.IndexHNSWFlat(width, 32, faiss.METRIC_INNER_PRODUCT)
    index.add(vectors)
    return index.search(queries, n)


def recall_at_n(found: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per query, the share of the exact top-n rows that an approximate search also returned."""
    return np.array([len(set(f) & set(e)) / max(1, len(e)) for f, e in zip(found.tolist(), exact.tolist())])
