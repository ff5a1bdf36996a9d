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

from .data import pad_batch

TOKENS = "tokens.npy"
SEQUENCES = "sequences.parquet"


def tokenize_corpus(
    tokenizer, corpus: pd.DataFrame, max_tokens: int, out_dir: str | Path, chunk: int = 4096
) -> pd.DataFrame:
    """Tokenise `corpus` (seq_id, text), truncate to `max_tokens`, drop sequences under 2 tokens.

    A sequence needs at least two tokens to carry any next-token loss.
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
    pieces = [p for p, k in zip(pieces, keep) if k]
    table = table[keep].reset_index(drop=True)
    table["offset"] = np.concatenate([[0], np.cumsum(table["n_tokens"].to_numpy())[:-1]]).astype(np.int64)
    np.save(out_dir / TOKENS, np.concatenate(pieces) if pieces else np.zeros(0, np.int32))
    table.to_parquet(out_dir / SEQUENCES, index=False)
    return table


class TokenStore:
    """Read access to a tokenised corpus by seq_id."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.table = pd.read_parquet(directory / SEQUENCES).set_index("seq_id", drop=False)
        self.tokens = np.load(directory / TOKENS, mmap_mode="r")

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
