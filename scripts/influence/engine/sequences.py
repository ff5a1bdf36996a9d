"""The tokenised corpus on disk and batches drawn from it.

`tokens.npy` holds every sequence's token ids end to end (int32, memory
mapped on read); `sequences.parquet` holds one row per sequence:
seq_id, text, offset (into tokens.npy), n_tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import integrity
from .data import pad_batch
from .files import atomic_path, read_table_with_metadata, write_table

TOKENS = "tokens.npy"
SEQUENCES = "sequences.parquet"
# tokens.npy is hashed on every open up to this size (~0.7 s); a larger one is checked by its length only.
VERIFY_TOKENS_BYTES = 1 << 28


def tokenize_corpus(
    tokenizer, corpus: pd.DataFrame, max_tokens: int, out_dir: str | Path, chunk: int = 4096, source: str = "corpus"
) -> pd.DataFrame:
    """Tokenise `corpus` (seq_id, text), truncate to `max_tokens`, drop sequences under 2 tokens.

    A sequence needs at least two tokens to carry any next-token loss. Raises ValueError naming
    `source` when no document is long enough (nothing could be fitted or scored).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pieces, lengths = [], []
    texts = corpus["text"].tolist()
    for start in tqdm(range(0, len(texts), chunk), desc="tokenize", unit="chunk"):
        encoded = tokenizer(
            texts[start : start + chunk], add_special_tokens=True, truncation=True, max_length=max_tokens
        )
        for ids in encoded["input_ids"]:
            pieces.append(np.asarray(ids, dtype=np.int32))
            lengths.append(len(ids))
    table = corpus[["seq_id", "text"]].copy()
    table["n_tokens"] = np.asarray(lengths, dtype=np.int64)
    keep = table["n_tokens"].to_numpy() >= 2
    if not keep.any():
        raise ValueError(
            f"{source}: all {len(table)} documents are too short (under 2 tokens after tokenising, "
            "so they carry no next-token loss); the corpus needs at least one longer document."
        )
    pieces = [p for p, k in zip(pieces, keep) if k]
    table = table[keep].reset_index(drop=True)
    table["offset"] = np.concatenate([[0], np.cumsum(table["n_tokens"].to_numpy())[:-1]]).astype(np.int64)
    tokens = np.concatenate(pieces)
    with atomic_path(out_dir / TOKENS) as tmp, open(tmp, "wb") as handle:
        np.save(handle, tokens)
    # tokens.npy has no metadata of its own: its checksum lives in the sequence table's
    write_table(table, out_dir / SEQUENCES, tokens_checksum=integrity.digest_arrays([(TOKENS, tokens)]))
    return table


class TokenStore:
    """Read access to a tokenised corpus by seq_id."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        table, metadata = read_table_with_metadata(directory / SEQUENCES)
        self.table = table.set_index("seq_id", drop=False)
        path = directory / TOKENS
        try:
            self.tokens = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as error:
            raise integrity.damaged(path, f"it is not a readable .npy file ({error})") from error
        if len(self.tokens) != int(self.table["n_tokens"].sum()):
            raise integrity.damaged(
                path, f"it holds {len(self.tokens)} tokens, {SEQUENCES} counts {int(self.table['n_tokens'].sum())}"
            )
        if self.tokens.nbytes <= VERIFY_TOKENS_BYTES:
            actual = integrity.digest_arrays([(TOKENS, np.asarray(self.tokens))])
            integrity.verify(path, metadata.get("tokens_checksum"), actual)

    def ids(self, seq_id: str) -> list[int]:
        row = self.table.loc[seq_id]
        return self.tokens[row["offset"] : row["offset"] + row["n_tokens"]].tolist()

    def batches(self, seq_ids: Sequence[str], batch_size: int, pad_id: int = 0) -> Iterator[tuple[list[str], dict]]:
        """(seq_ids, batch) pairs, length-sorted so batches carry little padding."""
        lengths = self.table.loc[list(seq_ids), "n_tokens"].to_numpy()
        order = [seq_ids[i] for i in np.argsort(-lengths, kind="stable")]
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            yield chunk, pad_batch([self.ids(s) for s in chunk], pad_id=pad_id)


def ordered_batches(store: TokenStore, seq_ids: Sequence[str], batch_size: int) -> tuple[list[str], list[dict]]:
    """All batches of `seq_ids` at once, and the seq_ids in the order the batches hold them."""
    order, batches = [], []
    for ids, batch in store.batches(seq_ids, batch_size):
        order.extend(ids)
        batches.append(batch)
    return order, batches


def fitting_sample(seq_ids: Sequence[str], n: int | None, seed: int) -> list[str]:
    """A reproducible random sample of `n` sequences (all of them if n is None or too large)."""
    if n is None or n >= len(seq_ids):
        return list(seq_ids)
    chosen = np.random.default_rng(seed).choice(len(seq_ids), size=n, replace=False)
    return [seq_ids[i] for i in np.sort(chosen)]


def shard_bounds(n_items: int, index: int, n_shards: int) -> tuple[int, int]:
    """[start, stop) of the `index`-th of `n_shards` contiguous, near-equal slices of `n_items` (every sharded rule)."""
    bounds = np.linspace(0, n_items, n_shards + 1).round().astype(int)
    return int(bounds[index]), int(bounds[index + 1])


def shard(seq_ids: Sequence[str], index: int, n_shards: int) -> list[str]:
    """The `index`-th of `n_shards` contiguous, near-equal slices."""
    start, stop = shard_bounds(len(seq_ids), index, n_shards)
    return list(seq_ids[start:stop])
