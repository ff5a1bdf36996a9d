"""Files on disk: safetensors with JSON metadata and parquet tables, written atomically and checksummed. No pickle.

Generic: it knows no engine type. Every safetensors file records its kind, the fingerprint of the tracked
layers it was computed on, and the settings that produced it; loading checks them so a file from another
model or another stage fails with a clear message. The typed artefacts (factors, eigendecompositions,
preconditioned queries) are read and written by `artefacts.py` on top of this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from . import integrity, names


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


def read_metadata(path) -> dict:
    """A safetensors artefact's metadata, without reading its tensors."""
    with safe_open(str(path), framework="pt") as handle:
        return {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}


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
