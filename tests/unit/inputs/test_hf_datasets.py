"""Hugging Face `datasets` corpus directories: the same sequences as the jsonl, split selection, shard errors."""

from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest
from influence.inputs.corpus import iter_corpus, read_corpus
from influence.inputs.hf_datasets import dataset_shards

# 23 rows: 3 shards of uneven length, and chunks that straddle the shard boundaries.
TEXTS = [f'document {i}: naïve café — 東京 🙂 "quoted", {"NA" if i % 5 == 0 else "text"}' for i in range(23)]
IDS = [f"doc-{i:02d}" for i in range(len(TEXTS))]


def _save(path: Path, columns: dict, num_shards: int = 3) -> Path:
    datasets.Dataset.from_dict(columns).save_to_disk(str(path), num_shards=num_shards)
    return path


def _jsonl(path: Path, columns: dict) -> Path:
    pd.DataFrame(columns).to_json(path, orient="records", lines=True, force_ascii=False)
    return path


@pytest.mark.parametrize("with_ids", [True, False], ids=["seq_id", "positions"])
def test_save_to_disk_reads_as_the_same_jsonl(tmp_path, with_ids):
    columns = {"seq_id": IDS, "text": TEXTS} if with_ids else {"text": TEXTS}
    directory = _save(tmp_path / "saved", columns)
    assert len(list(directory.glob("data-*-of-00003.arrow"))) == 3  # really several shards
    expected = read_corpus(_jsonl(tmp_path / "corpus.jsonl", columns))
    back = read_corpus(directory)
    pd.testing.assert_frame_equal(back, expected)
    assert back["seq_id"].tolist() == (IDS if with_ids else [str(i) for i in range(len(TEXTS))])
    assert back["text"].tolist() == TEXTS


def test_save_to_disk_custom_fields(tmp_path):
    columns = {"response": TEXTS, "uid": list(range(100, 100 + len(TEXTS))), "prompt": ["q"] * len(TEXTS)}
    directory = _save(tmp_path / "saved", columns)
    jsonl = _jsonl(tmp_path / "corpus.jsonl", columns)
    back = read_corpus(directory, text_field="response", id_field="uid")
    pd.testing.assert_frame_equal(back, read_corpus(jsonl, text_field="response", id_field="uid"))
    assert back["seq_id"].tolist()[:2] == ["100", "101"]


def test_dataset_dict_reads_the_chosen_split(tmp_path):
    path = tmp_path / "dict"
    splits = {"train": TEXTS[:15], "test": TEXTS[15:]}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v}) for k, v in splits.items()}).save_to_disk(
        str(path), num_shards={"train": 2, "test": 1}
    )
    assert read_corpus(path)["text"].tolist() == splits["train"]  # train by default
    test = read_corpus(path, split="test")
    assert test["text"].tolist() == splits["test"]
    assert test["seq_id"].tolist() == [str(i) for i in range(len(splits["test"]))]  # positions within the split
    assert [p.parent.name for p in dataset_shards(path, "train")] == ["train", "train"]


def test_unknown_split_lists_the_splits(tmp_path):
    path = tmp_path / "dict"
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": TEXTS[:3]}) for k in ("train", "test")}).save_to_disk(
        str(path)
    )
    with pytest.raises(
        ValueError, match=r"split 'validation' is not in this DatasetDict; its splits are \['train', 'test'\]"
    ) as err:
        read_corpus(path, split="validation")
    assert str(path) in str(err.value) and "corpus.split" in str(err.value)


@pytest.mark.parametrize("kind", ["parquet", "arrow-file"])
def test_shard_directory_in_sorted_order(tmp_path, kind):
    """Shards named out of creation order are read in sorted name order; positions run across them."""
    directory = tmp_path / "shards"
    directory.mkdir()
    parts = {"part-2": TEXTS[15:], "part-0": TEXTS[:6], "part-1": TEXTS[6:15]}
    for name, texts in parts.items():
        table = pa.table({"text": texts})
        if kind == "parquet":
            pd.DataFrame({"text": texts}).to_parquet(directory / f"{name}.parquet")
        else:
            feather.write_feather(table, directory / f"{name}.arrow")  # Arrow IPC file format
    (directory / "_SUCCESS").write_text("")
    (directory / "README.md").write_text("not a shard")
    back = read_corpus(directory)
    assert back["text"].tolist() == TEXTS
    assert back["seq_id"].tolist() == [str(i) for i in range(len(TEXTS))]


def test_missing_text_field_names_the_shard(tmp_path):
    directory = _save(tmp_path / "saved", {"seq_id": IDS, "content": TEXTS})
    with pytest.raises(ValueError, match=r"field 'body' not found; columns are \['seq_id', 'content'\]") as err:
        read_corpus(directory, text_field="body")
    assert str(directory / "data-00000-of-00003.arrow") in str(err.value)


def test_later_shard_without_the_field_is_named_after_earlier_chunks(tmp_path):
    """Streaming: the first chunks come out before the broken third shard is even opened."""
    directory = tmp_path / "shards"
    directory.mkdir()
    pd.DataFrame({"text": TEXTS[:8]}).to_parquet(directory / "a.parquet")
    pd.DataFrame({"text": TEXTS[8:16]}).to_parquet(directory / "b.parquet")
    pd.DataFrame({"body": TEXTS[16:]}).to_parquet(directory / "c.parquet")
    chunks = iter_corpus(directory, chunk_size=5)
    assert [next(chunks)["text"].tolist() for _ in range(3)] == [TEXTS[:5], TEXTS[5:10], TEXTS[10:15]]
    with pytest.raises(ValueError, match=r"c\.parquet: field 'text' not found; columns are \['body'\]"):
        next(chunks)


def test_null_and_non_string_text_name_row_and_shard(tmp_path):
    directory = tmp_path / "shards"
    directory.mkdir()
    pd.DataFrame({"text": TEXTS[:4]}).to_parquet(directory / "a.parquet")
    pd.DataFrame({"text": ["fine", "also fine", None]}).to_parquet(directory / "b.parquet")
    with pytest.raises(ValueError, match=r"b\.parquet: field 'text' of row 2 is missing \(null\)"):
        read_corpus(directory)
    numbers = _save(tmp_path / "numbers", {"text": list(range(len(TEXTS)))})
    with pytest.raises(
        ValueError, match=r"data-00000-of-00003\.arrow: field 'text' of row 0 is not a string \(column type int64\)"
    ):
        read_corpus(numbers)


def test_empty_directory_says_what_is_accepted(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no corpus shards found") as err:
        read_corpus(tmp_path / "empty")
    message = str(err.value)
    assert "save_to_disk" in message and ".parquet" in message and ".arrow" in message
    assert "subdirectories ['train']: point corpus.path at one" in message


def test_mixed_shard_formats_are_refused(tmp_path):
    pd.DataFrame({"text": TEXTS}).to_parquet(tmp_path / "a.parquet")
    feather.write_feather(pa.table({"text": TEXTS}), tmp_path / "a.arrow")
    with pytest.raises(ValueError, match="mixes .arrow and .parquet shards"):
        read_corpus(tmp_path)


def test_empty_dataset_is_an_empty_corpus(tmp_path):
    directory = _save(tmp_path / "saved", {"text": []}, num_shards=1)
    with pytest.raises(ValueError, match=rf"{directory}: empty corpus"):
        read_corpus(directory)


@pytest.mark.parametrize("chunk_size", [1, 4, 8, 23, 50])
def test_chunks_have_chunk_size_rows_across_shards(tmp_path, chunk_size):
    directory = _save(tmp_path / "saved", {"seq_id": IDS, "text": TEXTS}, num_shards=3)
    chunks = list(iter_corpus(directory, chunk_size=chunk_size))
    n_full, rest = divmod(len(TEXTS), chunk_size)
    assert [len(c) for c in chunks] == [chunk_size] * n_full + ([rest] if rest else [])
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), read_corpus(directory))
