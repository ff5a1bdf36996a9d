"""Corpus readers: formats round-trip, clear errors, WordNet glosses."""

from pathlib import Path

import pandas as pd
import pytest
from influence.inputs.corpus import (
    WORDNET_N_GLOSSES,
    WORDNET_ROOT,
    iter_corpus,
    read_corpus,
    read_wordnet_glosses,
    write_corpus_jsonl,
)

# Texts that break naive readers: csv quoting, NA-like strings, unicode, json escapes.
TEXTS = [
    "Paris: the capital of France",
    'a "quoted", comma-separated; text',
    "NA",
    "null",
    "naïve café — 東京 🙂",
    "back\\slash and\ttab",
    "   leading spaces kept out by txt only",
]
IDS = [f"doc-{i:02d}" for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def glosses() -> pd.DataFrame:
    # CI installs WordNet; a missing package must fail loudly, never skip
    assert Path(WORDNET_ROOT, "data.noun").is_file(), (
        f"WordNet not found under {WORDNET_ROOT}: run `apt-get install -y --no-install-recommends wordnet-base`"
    )
    return read_wordnet_glosses()


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"seq_id": IDS, "text": TEXTS})


def _write(df: pd.DataFrame, path: Path) -> None:
    """Write with pandas, not with the module under test."""
    if ".jsonl" in path.name:
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False)


def test_wordnet_gloss_count_and_ids(glosses):
    assert len(glosses) == WORDNET_N_GLOSSES == 117_659
    assert list(glosses.columns) == ["seq_id", "text", "lemma", "pos"]
    assert glosses["seq_id"].is_unique
    assert glosses["pos"].value_counts().to_dict() == {"noun": 82115, "adj": 18156, "verb": 13767, "adv": 3621}
    assert not glosses["text"].str.contains("  |", regex=False).any()  # no pointer data leaked into text


def test_wordnet_known_glosses(glosses):
    rows = glosses.set_index("seq_id")
    paris = rows.loc["noun:08932568"]
    assert paris["lemma"] == "Paris"
    assert paris["text"] == (
        "Paris: the capital and largest city of France; and international center of culture and commerce"
    )
    # multiword lemma: underscores become spaces
    assert glosses[glosses["lemma"] == "Walla Walla"]["text"].iloc[0].startswith("Walla Walla: a town in")
    # adjective syntactic marker "afraid(p)" is not part of the lemma
    assert rows.loc["adj:00077645", "text"].startswith("afraid: filled with fear or apprehension;")
    assert glosses.iloc[0]["seq_id"] == "noun:00001740"  # license header skipped, file order kept


def test_wordnet_missing_root_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y --no-install-recommends wordnet-base"):
        read_wordnet_glosses(tmp_path)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet", ".csv", ".csv.gz"])
def test_tabular_formats_round_trip(tmp_path, suffix):
    df = _frame()
    path = tmp_path / f"corpus{suffix}"
    _write(df, path)
    back = read_corpus(path)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert all(isinstance(v, str) for v in back["text"])


def test_txt_one_document_per_nonempty_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS[:3] + ["", "   "] + TEXTS[3:]) + "\n", encoding="utf-8")
    back = read_corpus(path)
    assert back["text"].tolist() == [t.strip() for t in TEXTS]
    assert back["seq_id"].tolist() == [str(i) for i in range(len(TEXTS))]  # positions among documents


def test_write_corpus_jsonl_round_trips_with_extra_columns(tmp_path):
    df = _frame().assign(lemma="x")
    path = tmp_path / "sub" / "corpus.jsonl"
    write_corpus_jsonl(df, path)
    pd.testing.assert_frame_equal(read_corpus(path), _frame(), check_dtype=False)
    assert '"lemma": "x"' in path.read_text(encoding="utf-8").splitlines()[0]


def test_chunks_concatenate_to_the_whole(tmp_path):
    path = tmp_path / "corpus.jsonl"
    write_corpus_jsonl(_frame(), path)
    chunks = list(iter_corpus(path, chunk_size=3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), read_corpus(path))


def test_custom_fields_and_positional_ids(tmp_path):
    path = tmp_path / "corpus.parquet"
    pd.DataFrame({"body": TEXTS, "uid": range(100, 100 + len(TEXTS))}).to_parquet(path)
    assert read_corpus(path, text_field="body", id_field="uid")["seq_id"].tolist()[:2] == ["100", "101"]
    assert read_corpus(path, text_field="body")["seq_id"].tolist()[:2] == ["0", "1"]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_missing_text_field_names_field_and_file(tmp_path, suffix):
    df = pd.DataFrame({"seq_id": IDS, "content": TEXTS})
    path = tmp_path / f"corpus{suffix}"
    _write(df, path)
    with pytest.raises(ValueError, match=r"field 'body'") as err:
        read_corpus(path, text_field="body")
    assert str(path) in str(err.value)


def test_null_text_is_rejected(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "ok"}\n{"text": null}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r":2: field 'text' is missing"):
        read_corpus(path)


def test_unsupported_suffix_and_empty_corpus(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported corpus suffix '\.docx'"):
        read_corpus(tmp_path / "corpus.docx")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty corpus"):
        read_corpus(empty)


def test_duplicate_ids_are_rejected(tmp_path):
    path = tmp_path / "corpus.csv"
    pd.DataFrame({"seq_id": ["a", "b", "a"], "text": ["x", "y", "z"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="duplicate seq_id"):
        read_corpus(path)
