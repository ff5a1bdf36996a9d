"""Reading candidate corpora (jsonl, txt, parquet, csv) and the WordNet gloss corpus.

Every reader yields DataFrames with columns ``seq_id`` (str) and ``text`` (str).
Formats are chosen by suffix; ``.gz`` is accepted for the line-based formats
(jsonl, txt, csv); a directory is a Hugging Face `datasets` corpus (`hf_datasets.py`).
``iter_corpus`` streams fixed-size chunks so a 10M-line corpus
never has to fit in memory; ``read_corpus`` is ``iter_corpus`` concatenated.

Ids: with ``id_field=None`` the ``seq_id`` field is used when the first record
(jsonl) or the header (parquet, csv) has one, so ``write_corpus_jsonl`` →
``read_corpus`` round-trips; else the 0-based position of the document in the
file (txt: among non-empty lines). Texts are kept verbatim except in txt, where
each line is stripped.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

SEQ_ID = "seq_id"
TEXT = "text"
WORDNET_ROOT = "/usr/share/wordnet"
WORDNET_POS = ("noun", "verb", "adj", "adv")  # file order = row order of the corpus
WORDNET_N_GLOSSES = 117_659  # WordNet 3.0 (Debian wordnet-base)
_ADJ_MARKERS = ("(a)", "(p)", "(ip)")  # syntactic markers glued to adjectives
_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "txt",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
}


def corpus_format(path: str | os.PathLike) -> tuple[str, bool]:
    """(format, gzipped) of a corpus file, from its suffix."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None or (gz and fmt == "parquet"):
        raise ValueError(
            f"{path}: unsupported corpus suffix {''.join(Path(path).suffixes)!r}; "
            f"use one of {sorted(_FORMATS)} (jsonl/txt/csv may end in .gz)"
        )
    return fmt, gz


def _open_text(path: Path, gz: bool) -> io.TextIOBase:
    if gz:
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def as_frame(ids: list[str], texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({SEQ_ID: pd.Series(ids, dtype=object), TEXT: pd.Series(texts, dtype=object)})


def _in_chunks(records: Iterator[tuple[str, str]], chunk_size: int) -> Iterator[pd.DataFrame]:
    """(seq_id, text) pairs as DataFrames of at most `chunk_size` rows."""
    ids: list[str] = []
    texts: list[str] = []
    for seq_id, text in records:
        ids.append(seq_id)
        texts.append(text)
        if len(texts) == chunk_size:
            yield as_frame(ids, texts)
            ids, texts = [], []
    if texts:
        yield as_frame(ids, texts)


def _iter_jsonl(path: Path, gz: bool, text_field: str, id_field: str | None, chunk_size: int) -> Iterator[pd.DataFrame]:
    return _in_chunks(_jsonl_records(path, gz, text_field, id_field), chunk_size)


def _jsonl_records(path: Path, gz: bool, text_field: str, id_field: str | None) -> Iterator[tuple[str, str]]:
    id_key = id_field
    n_docs = 0
    with _open_text(path, gz) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({err.msg}); one object per line") from err
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            if n_docs == 0 and id_key is None and SEQ_ID in record:
                id_key = SEQ_ID
            text = record.get(text_field)
            if not isinstance(text, str):
                raise ValueError(_bad_field(path, line_no, text_field, text, list(record)))
            if id_key is None:
                seq_id = str(n_docs)
            else:
                value = record.get(id_key)
                if value is None:
                    raise ValueError(_bad_field(path, line_no, id_key, value, list(record)))
                seq_id = str(value)
            n_docs += 1
            yield seq_id, text


def _bad_field(path: Path, line_no: int, field: str, value: object, keys: list[str]) -> str:
    what = "missing" if value is None else f"not a string ({type(value).__name__})"
    return f"{path}:{line_no}: field {field!r} is {what}; record has fields {keys}. Pass the right text_field/id_field."


def _iter_txt(path: Path, gz: bool, chunk_size: int) -> Iterator[pd.DataFrame]:
    def records() -> Iterator[tuple[str, str]]:
        with _open_text(path, gz) as fh:
            texts = (line.strip() for line in fh)
            yield from ((str(i), text) for i, text in enumerate(t for t in texts if t))

    return _in_chunks(records(), chunk_size)


def _table_chunks(path: Path, fmt: str, gz: bool, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Raw column chunks of a parquet or csv file (all values as read)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        columns = pf.schema_arrow.names
        if pf.metadata.num_rows == 0:
            yield pd.DataFrame(columns=columns)
        for batch in pf.iter_batches(batch_size=chunk_size):
            yield batch.to_pandas()
    else:
        # dtype=str and no NA parsing: a document reading "NA" or "null" stays text
        reader = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            chunksize=chunk_size,
            compression="gzip" if gz else None,
        )
        with reader:
            yield from reader


def _iter_table(
    path: Path, fmt: str, gz: bool, text_field: str, id_field: str | None, chunk_size: int
) -> Iterator[pd.DataFrame]:
    n_docs = 0
    id_key = id_field
    for i, raw in enumerate(_table_chunks(path, fmt, gz, chunk_size)):
        if i == 0 and id_key is None and SEQ_ID in raw.columns:
            id_key = SEQ_ID
        for field in (text_field, id_key):
            if field is not None and field not in raw.columns:
                raise ValueError(
                    f"{path}: field {field!r} not found; columns are {list(raw.columns)}. "
                    "Pass the right text_field/id_field."
                )
        if raw.empty:
            continue
        text = raw[text_field]
        is_str = text.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if not is_str.all():
            bad = int((~is_str).argmax()) + n_docs
            raise ValueError(f"{path}: field {text_field!r} of document {bad} is not a string (null or numeric?)")
        if id_key is None:
            ids = [str(n) for n in range(n_docs, n_docs + len(raw))]
        else:
            if raw[id_key].isna().any():
                raise ValueError(f"{path}: field {id_key!r} has missing values near document {n_docs}")
            ids = raw[id_key].astype(str).tolist()
        n_docs += len(raw)
        yield as_frame(ids, text.tolist())


def iter_corpus(
    path: str | os.PathLike,
    text_field: str = TEXT,
    chunk_size: int = 50_000,
    id_field: str | None = None,
    split: str = "train",
) -> Iterator[pd.DataFrame]:
    """Stream a corpus as DataFrames of at most `chunk_size` rows (`seq_id`, `text`).

    `split` is the split read from a `datasets` DatasetDict directory (ignored otherwise).
    Raises ValueError naming the file for an unsupported suffix, a missing field or an
    empty corpus (the latter only once the whole file has been read).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    if path.is_dir():
        from .hf_datasets import iter_dataset_dir  # imported here: it imports this module

        chunks = iter_dataset_dir(path, text_field, id_field, split, chunk_size)
        yield from _non_empty(path, chunks, text_field)
        return
    fmt, gz = corpus_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus file not found")
    if fmt == "jsonl":
        chunks = _iter_jsonl(path, gz, text_field, id_field, chunk_size)
    elif fmt == "txt":
        if text_field != TEXT or id_field is not None:
            raise ValueError(f"{path}: txt corpora have no fields; leave text_field/id_field at their defaults")
        chunks = _iter_txt(path, gz, chunk_size)
    else:
        chunks = _iter_table(path, fmt, gz, text_field, id_field, chunk_size)
    try:
        yield from _non_empty(path, chunks, text_field)
    except UnicodeDecodeError as error:
        raise ValueError(_encoding_message(path, gz)) from error


def _non_empty(path: Path, chunks: Iterator[pd.DataFrame], text_field: str) -> Iterator[pd.DataFrame]:
    """`chunks`, refusing a corpus without documents once it has been read to its end."""
    empty = True
    for chunk in chunks:
        empty = False
        yield chunk
    if empty:
        raise ValueError(f"{path}: empty corpus (no documents); check the file and text_field={text_field!r}")


def _encoding_message(path: Path, gz: bool) -> str:
    """Where the first byte that is not UTF-8 sits (line and byte offset), and how to convert the file."""
    offset = 0
    with gzip.open(path, "rb") if gz else open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                byte = raw[error.start : error.start + 1].hex()
                return (
                    f"{path}:{line_no}: byte 0x{byte} at byte offset {offset + error.start} is not UTF-8; "
                    "corpora must be UTF-8. If the file is Latin-1, convert it with "
                    f"`iconv -f latin1 -t utf-8 {path} > converted{''.join(path.suffixes)}`."
                )
            offset += len(raw)
    return f"{path}: not valid UTF-8; corpora must be UTF-8 (convert with iconv -f <encoding> -t utf-8)."


def read_corpus(
    path: str | os.PathLike, text_field: str = TEXT, id_field: str | None = None, split: str = "train"
) -> pd.DataFrame:
    """The whole corpus as one DataFrame (`seq_id`, `text`); seq_ids must be unique."""
    df = pd.concat(list(iter_corpus(path, text_field=text_field, id_field=id_field, split=split)), ignore_index=True)
    dup = df[SEQ_ID].duplicated()
    if dup.any():
        raise ValueError(
            f"{path}: {int(dup.sum())} duplicate seq_id values (first: {df[SEQ_ID][dup].iloc[0]!r}); "
            "ids must be unique—choose another id_field or leave it None for positions"
        )
    return df


def _wordnet_lemma(word: str) -> str:
    for marker in _ADJ_MARKERS:
        if word.endswith(marker):
            word = word[: -len(marker)]
            break
    return word.replace("_", " ")


def read_wordnet_glosses(root: str | os.PathLike = WORDNET_ROOT) -> pd.DataFrame:
    """WordNet 3.0 glosses as a corpus: `seq_id`, `text`, `lemma`, `pos`.

    `seq_id` is "<pos>:<synset offset>" (e.g. "noun:08932568"); `lemma` is the
    synset's first word (underscores → spaces, adjective markers like "(p)" removed);
    `text` is "<lemma>: <gloss>" so each document reads as a definition sentence, e.g.
    "Paris: the capital and largest city of France; and international center of
    culture and commerce". Rows follow file order: noun, verb, adj, adv.
    """
    root = Path(root)
    rows: dict[str, list[str]] = {SEQ_ID: [], TEXT: [], "lemma": [], "pos": []}
    for pos in WORDNET_POS:
        path = root / f"data.{pos}"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: WordNet is missing. Install it with "
                "`apt-get install -y --no-install-recommends wordnet-base`"
            )
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                if line.startswith("  "):  # license header
                    continue
                head, sep, gloss = line.partition(" | ")
                fields = head.split(" ", 5)
                if not sep or len(fields) < 5:
                    raise ValueError(f"{path}:{line_no}: not a WordNet data line (no ' | ' gloss separator)")
                lemma = _wordnet_lemma(fields[4])
                gloss = gloss.strip()
                rows[SEQ_ID].append(f"{pos}:{fields[0]}")
                rows[TEXT].append(f"{lemma}: {gloss}")
                rows["lemma"].append(lemma)
                rows["pos"].append(pos)
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in rows.items()})


def write_corpus_jsonl(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a corpus (all columns, `seq_id` and `text` first) as UTF-8 jsonl, atomically."""
    missing = [c for c in (SEQ_ID, TEXT) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: DataFrame lacks column(s) {missing}; has {list(df.columns)}")
    if df[SEQ_ID].duplicated().any():
        raise ValueError(f"{path}: duplicate seq_id values in the DataFrame; ids must be unique")
    from ..engine.files import atomic_path

    columns = [SEQ_ID, TEXT] + [c for c in df.columns if c not in (SEQ_ID, TEXT)]
    records = df[columns].astype({SEQ_ID: str}).to_dict(orient="records")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False))
            fh.write("\n")


def read_source(
    paths: list[str], wordnet: bool, text_field: str = TEXT, id_field: str | None = None, split: str = "train"
) -> pd.DataFrame:
    """The run's corpus (seq_id, text): WordNet's glosses (paths: its data files) or the corpus file or
    directory (paths[0]; a directory's shards follow it, listed only so that a changed shard reruns the rule)."""
    if wordnet:
        return read_wordnet_glosses(Path(paths[0]).parent)
    return read_corpus(paths[0], text_field, id_field, split)
