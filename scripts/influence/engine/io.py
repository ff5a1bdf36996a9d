"""Artefacts on disk: safetensors with JSON metadata, written atomically. No pickle.

Every file records its kind, the fingerprint of the tracked layers it was
computed on, and the settings that produced it; loading checks them so a
factor file from another model or another stage fails with a clear message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from . import integrity, names
from .factors import FactorSums
from .precondition import Preconditioned


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a sibling `<name>.partial` to write; it replaces `path` in one rename only if the block succeeds.

    The one way every artefact is written: a killed or failing job never leaves a half file at `path`
    (a leftover `.partial` is ignored by git and overwritten by the next attempt).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], **metadata) -> None:
    """Write tensors with JSON metadata, atomically."""
    # safetensors refuses tensors that share memory (e.g. gate/up eigenvectors): store copies.
    unique: dict[int, torch.Tensor] = {}
    tensors = {k: _own(t, unique) for k, t in tensors.items()}
    metadata[names.META_CHECKSUM] = integrity.digest_tensors(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in metadata.items()})


def _own(tensor: torch.Tensor, unique: dict) -> torch.Tensor:
    tensor = tensor.detach().cpu().contiguous()
    ptr = tensor.data_ptr()
    if ptr in unique:
        return tensor.clone()
    unique[ptr] = tensor
    return tensor


def load_tensors(path: str | Path, kind: str, fingerprint: str | None = None) -> tuple[dict, dict]:
    """Tensors and metadata of a file of `kind`; with `fingerprint`, it must match the model's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the rule that produces it first.")
    try:
        metadata = read_metadata(path)
        tensors = load_file(str(path))
    except (SafetensorError, json.JSONDecodeError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors artefact ({error}); delete it and rerun.") from error
    integrity.verify(path, metadata.get(names.META_CHECKSUM), integrity.digest_tensors(tensors))
    if metadata.get(names.META_KIND) != kind:
        raise ValueError(f"{path} holds {metadata.get(names.META_KIND)!r}, expected {kind!r}.")
    if fingerprint is not None and metadata.get(names.META_MODEL) != fingerprint:
        raise ValueError(
            f"{path} was computed on another model or layer set (fingerprint {metadata.get(names.META_MODEL)}, "
            f"this model has {fingerprint}); recompute it for this model."
        )
    integrity.check_values(path, kind, tensors, metadata)
    return tensors, metadata


def _split(tensors: dict[str, torch.Tensor], modules: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {m: {} for m in modules}
    for key, tensor in tensors.items():
        module, factor = key.rsplit(".", 1)
        out[module][factor] = tensor
    return out


def _flat(per_module: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {names.key(m, f): t for m, fs in per_module.items() for f, t in fs.items()}


def save_factor_sums(path, sums: FactorSums, kind: str, fingerprint: str, settings: dict) -> None:
    """Covariance or eigenvalue-correction partial sums with their counts."""
    save_tensors(
        path,
        _flat(sums.sums),
        **{
            names.META_KIND: kind,
            names.META_MODEL: fingerprint,
            names.META_MODULES: list(sums.sums),
            names.META_TOKENS: sums.n_tokens,
            names.META_SEQUENCES: sums.n_sequences,
            names.META_SETTINGS: settings,
        },
    )


def load_factor_sums(path, kind: str, fingerprint: str | None = None) -> FactorSums:
    tensors, meta = load_tensors(path, kind, fingerprint)
    return FactorSums(_split(tensors, meta[names.META_MODULES]), meta[names.META_TOKENS], meta[names.META_SEQUENCES])


def save_eigen(path, eigen: dict, fingerprint: str, settings: dict, n_tokens: int = 0, n_sequences: int = 0) -> None:
    """Eigendecompositions, with the covariance's counts (K-FAC's n̄ = n_tokens / n_sequences)."""
    save_tensors(
        path,
        _flat(eigen),
        **{
            names.META_KIND: names.KIND_EIGEN,
            names.META_MODEL: fingerprint,
            names.META_MODULES: list(eigen),
            names.META_SETTINGS: settings,
            names.META_TOKENS: n_tokens,
            names.META_SEQUENCES: n_sequences,
        },
    )


def read_metadata(path) -> dict:
    """A safetensors artefact's metadata, without reading its tensors."""
    with safe_open(str(path), framework="pt") as handle:
        return {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}


def load_eigen(path, fingerprint: str | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Eigendecompositions; identical activation eigenvectors are shared again after loading."""
    tensors, meta = load_tensors(path, names.KIND_EIGEN, fingerprint)
    eigen = _split(tensors, meta[names.META_MODULES])
    seen: list[torch.Tensor] = []
    for factors in eigen.values():
        for name in (names.ACTIVATION_EIGENVECTORS, names.ACTIVATION_EIGENVALUES):
            twin = next((t for t in seen if t.shape == factors[name].shape and torch.equal(t, factors[name])), None)
            if twin is None:
                seen.append(factors[name])
            else:
                factors[name] = twin
    return eigen


def load_curvature(inputs: Mapping[str, str], fingerprint: str | None = None) -> dict:
    """The factors a preconditioning rule's inputs name, as `precondition_queries` keywords.

    `inputs` maps names.EIGEN_INPUT / names.CORRECTION_INPUT to files (what the estimator's registry row
    asks for; either may be absent). Returns {eigen, correction, tokens_per_sequence}, None where absent;
    tokens_per_sequence (K-FAC's n̄) comes from the eigendecomposition's counts.
    """
    eigen = load_eigen(inputs[names.EIGEN_INPUT], fingerprint) if names.EIGEN_INPUT in inputs else None
    correction = None
    if names.CORRECTION_INPUT in inputs:
        correction = load_factor_sums(inputs[names.CORRECTION_INPUT], names.KIND_CORRECTION, fingerprint)
    per_sequence = None
    if eigen is not None:
        counts = read_metadata(inputs[names.EIGEN_INPUT])
        per_sequence = counts.get(names.META_TOKENS, 0) / max(counts.get(names.META_SEQUENCES, 0), 1) or None
    return {"eigen": eigen, "correction": correction, "tokens_per_sequence": per_sequence}


def save_preconditioned(path, pre: Preconditioned, fingerprint: str, settings: dict) -> None:
    tensors = _flat(pre.layers)
    tensors.update({names.key(m, names.DAMPING): torch.tensor(v) for m, v in pre.damping.items()})
    save_tensors(
        path,
        tensors,
        **{
            names.META_KIND: names.KIND_PRECONDITIONED,
            names.META_MODEL: fingerprint,
            names.META_MODULES: list(pre.layers),
            names.META_SETTINGS: settings,
            "query_ids": pre.query_ids,
            "estimator": pre.estimator,
            "rank": pre.rank,
        },
    )


def load_preconditioned(path, fingerprint: str | None = None) -> Preconditioned:
    tensors, meta = load_tensors(path, names.KIND_PRECONDITIONED, fingerprint)
    layers = _split(tensors, meta[names.META_MODULES])
    damping = {m: float(f.pop(names.DAMPING)) for m, f in layers.items() if names.DAMPING in f}
    return Preconditioned(meta["query_ids"], meta["estimator"], meta["rank"], layers, damping)


# Tables: parquet whose schema metadata records the checksum of its data (engine/integrity.py).
TABLE_CHECKSUM = f"influence.{names.META_CHECKSUM}".encode()


def write_table(frame: pd.DataFrame, path: str | os.PathLike, **metadata: str) -> None:
    """Write `frame` (without its index) as parquet, atomically, with the checksum of its data.

    The checksum is taken of the frame as `read_table` will return it (pandas → Arrow → pandas), so a
    dtype that Arrow normalises (e.g. None in a float column) cannot make a sound file look damaged.
    `metadata` adds string entries to the schema metadata (e.g. the checksum of a companion file).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {TABLE_CHECKSUM: integrity.digest_frame(table.to_pandas()).encode()}
    extra.update({f"influence.{k}".encode(): str(v).encode() for k, v in metadata.items()})
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """A table written by `write_table`, verified against its checksum (all columns are read to check it)."""
    frame, _ = read_table_with_metadata(path)
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{path} lacks columns {missing}; it has {list(frame.columns)}.")
        frame = frame[columns]
    return frame


def read_table_with_metadata(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, str]]:
    """(table, the `metadata` it was written with), verified against its checksum."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the rule that produces it first.")
    try:
        table = pq.read_table(path)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError) as error:
        raise integrity.damaged(path, f"it is not a readable parquet file ({error})") from error
    stored = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if k.startswith(b"influence.")}
    integrity.verify(path, stored.pop(f"influence.{names.META_CHECKSUM}", None), integrity.digest_frame(frame))
    return frame, {k.removeprefix("influence."): v for k, v in stored.items()}
