"""Hugging Face `datasets` corpora, read with pyarrow alone (the `datasets` package is not needed at run time).

A corpus directory is one of
- a `Dataset.save_to_disk` directory: ``state.json`` lists its ``data-0000i-of-0000n.arrow`` shards (Arrow IPC
  stream format), read in that order;
- a `DatasetDict.save_to_disk` directory: ``dataset_dict.json`` lists the splits, each a subdirectory as above;
  `split` picks one (default ``train``);
- a directory of ``.parquet``/``.pq``/``.arrow`` shards (IPC stream or file format), read in sorted name order.
  Hidden files, ``_``-prefixed files (``_SUCCESS``, ``_metadata``) and `datasets`' ``cache-*.arrow`` files
  (map/filter caches, not data) are skipped; subdirectories are not searched.

The id rules are those of the corpus files (`corpus.py`): `id_field`, else a ``seq_id`` column when the first
shard has one, else the 0-based position of the row across the shards in reading order. Shards are streamed
record batch by record batch and regrouped into chunks of exactly `chunk_size` rows (the last may be shorter),
so only one chunk and one batch are in memory at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .corpus import SEQ_ID, as_frame

DEFAULT_SPLIT = "train"
SHARD_SUFFIXES = {".arrow": "arrow", ".parquet": "parquet", ".pq": "parquet"}
ACCEPTED = (
    "a `datasets` save_to_disk directory (state.json and .arrow shards, or dataset_dict.json and split "
    "subdirectories) or a directory of .parquet, .pq or .arrow shards"
)


def dataset_shards(path: str | Path, split: str = DEFAULT_SPLIT) -> list[Path]:
    """The data files a corpus directory is read from, in reading order (`split`: a DatasetDict's split)."""
    path = Path(path)
    if (path / "dataset_dict.json").is_file():
        splits = _json(path / "dataset_dict.json").get("splits", [])
        if split not in splits:
            raise ValueError(
                f"{path}: split {split!r} is not in this DatasetDict; its splits are {splits}. "
                "Set corpus.split to one of them."
            )
        path = path / split
    if (path / "state.json").is_file():
        return _saved_shards(path)
    return _shard_files(path)


def _json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: invalid JSON ({err.msg}); re-save the dataset") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}; re-save the dataset")
    return value


def _saved_shards(path: Path) -> list[Path]:
    """A save_to_disk directory's shards, in the order state.json lists them (that is the row order)."""
    entries = _json(path / "state.json").get("_data_files") or []
    shards = [path / entry["filename"] for entry in entries if isinstance(entry, dict) and "filename" in entry]
    if not shards:
        raise ValueError(f"{path / 'state.json'}: lists no data files (_data_files); re-save the dataset")
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise ValueError(f"{path}: state.json lists {missing}, which do not exist; re-save the dataset")
    return shards


def _shard_files(path: Path) -> list[Path]:
    """A directory's parquet/arrow shards, sorted by name; refuses an empty directory and mixed formats."""
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file()
        and p.suffix.lower() in SHARD_SUFFIXES
        and not p.name.startswith((".", "_"))
        and not (p.name.startswith("cache-") and p.suffix == ".arrow")
    )
    if not files:
        subdirs = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        hint = f"; it has subdirectories {subdirs}: point corpus.path at one" if subdirs else ""
        raise ValueError(f"{path}: no corpus shards found; a corpus directory must be {ACCEPTED}{hint}")
    formats = {SHARD_SUFFIXES[p.suffix.lower()] for p in files}
    if len(formats) > 1:
        # Most likely one dataset exported twice: reading both would count every document twice.
        raise ValueError(f"{path}: mixes .arrow and .parquet shards; keep one format in a corpus directory")
    return files


def _arrow_reader(shard: Path) -> pa.ipc.RecordBatchStreamReader | pa.ipc.RecordBatchFileReader:
    source = pa.memory_map(str(shard))  # zero-copy: batches are read from the page cache, not into memory
    try:
        return pa.ipc.open_stream(source)  # what save_to_disk writes
    except pa.ArrowInvalid:
        source.seek(0)
        try:
            return pa.ipc.open_file(source)  # Feather v2 / IPC file format
        except pa.ArrowInvalid as err:
            raise ValueError(f"{shard}: not an Arrow IPC stream or file ({err})") from err


def _columns(shard: Path) -> list[str]:
    if SHARD_SUFFIXES[shard.suffix.lower()] == "parquet":
        return pq.ParquetFile(shard).schema_arrow.names
    return _arrow_reader(shard).schema.names


def _batches(shard: Path, columns: list[str], chunk_size: int) -> Iterator[pa.RecordBatch]:
    """The shard's `columns`, batch by batch, no batch longer than `chunk_size` rows."""
    if SHARD_SUFFIXES[shard.suffix.lower()] == "parquet":
        yield from pq.ParquetFile(shard).iter_batches(batch_size=chunk_size, columns=columns)
        return
    reader = _arrow_reader(shard)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        batches: Iterator[pa.RecordBatch] = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        batches = iter(reader)
    for batch in batches:
        batch = batch.select(columns)
        for start in range(0, batch.num_rows, chunk_size):
            yield batch.slice(start, chunk_size)


def _check_columns(shard: Path, names: list[str], fields: list[str | None]) -> None:
    for field in fields:
        if field is not None and field not in names:
            raise ValueError(
                f"{shard}: field {field!r} not found; columns are {names}. Pass the right text_field/id_field."
            )


def _texts(shard: Path, column: pa.Array, field: str, row: int) -> list[str]:
    """A batch's text column as Python strings; `row` is the batch's first row within the shard."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    # str(): pa.types.is_string_view is missing from the oldest pyarrow requirements.txt allows
    if not (
        pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or str(column.type) == "string_view"
    ):
        raise ValueError(
            f"{shard}: field {field!r} of row {row} is not a string (column type {column.type}); "
            "point text_field at a string column."
        )
    if column.null_count:
        bad = row + column.is_null().to_pylist().index(True)
        raise ValueError(f"{shard}: field {field!r} of row {bad} is missing (null); every document needs a text.")
    return column.to_pylist()


def _ids(shard: Path, column: pa.Array, field: str, row: int) -> list[str]:
    if column.null_count:
        bad = row + column.is_null().to_pylist().index(True)
        raise ValueError(f"{shard}: field {field!r} of row {bad} is missing (null); ids must be set on every row.")
    # through pandas, as the parquet and csv readers do, so an id reads the same in every format
    return column.to_pandas().astype(str).tolist()


def _shard_records(
    shards: list[Path], text_field: str, id_key: str | None, chunk_size: int
) -> Iterator[tuple[list[str], list[str]]]:
    """(ids, texts) per record batch, every shard checked as it is opened."""
    n_docs = 0
    columns = [text_field] if id_key is None else [text_field, id_key]
    for shard in shards:
        _check_columns(shard, _columns(shard), columns)
        row = 0
        for batch in _batches(shard, columns, chunk_size):
            texts = _texts(shard, batch.column(text_field), text_field, row)
            if id_key is None:
                ids = [str(n) for n in range(n_docs, n_docs + len(texts))]
            else:
                ids = _ids(shard, batch.column(id_key), id_key, row)
            row += len(texts)
            n_docs += len(texts)
            yield ids, texts


def iter_dataset_dir(
    path: str | Path, text_field: str, id_field: str | None, split: str, chunk_size: int
) -> Iterator[pd.DataFrame]:
    """Stream a corpus directory as DataFrames (`seq_id`, `text`) of `chunk_size` rows (the last may be shorter)."""
    shards = dataset_shards(path, split)
    id_key = id_field
    if id_key is None and SEQ_ID in _columns(shards[0]):
        id_key = SEQ_ID
    ids: list[str] = []
    texts: list[str] = []
    for batch_ids, batch_texts in _shard_records(shards, text_field, id_key, chunk_size):
        ids.extend(batch_ids)
        texts.extend(batch_texts)
        while len(texts) >= chunk_size:
            yield as_frame(ids[:chunk_size], texts[:chunk_size])
            ids, texts = ids[chunk_size:], texts[chunk_size:]
    if texts:
        yield as_frame(ids, texts)
