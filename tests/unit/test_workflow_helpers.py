"""Library pieces the rules use: query files, the token store, shards, the HTML report."""

import pandas as pd
import pytest
from influence.engine.sequences import TokenStore, fitting_sample, shard, tokenize_corpus
from influence.queries import load_queries
from influence.report import highlight

SHIPPED = "scripts/influence/resources/queries.yaml"


def test_shipped_queries_pair_every_fact_with_translations_and_a_flip():
    queries = load_queries(SHIPPED)
    groups = pd.DataFrame([{**q.tags, "id": q.id} for q in queries])
    per_group = groups.groupby("group").apply(lambda g: sorted(zip(g["lang"], g["order"])), include_groups=False)
    expected = sorted(
        [("de", "original"), ("en", "flipped"), ("en", "original"), ("es", "original"), ("fr", "original")]
    )
    assert len(per_group) == 10 and all(v == expected for v in per_group)


@pytest.mark.parametrize(
    "text,message",
    [
        ("- {id: a, prompt: x}", "'completion'"),
        ("- {id: a, prompt: x, completion: y}\n- {id: a, prompt: x, completion: z}", "duplicate id 'a'"),
        ("- {id: a, prompt: x, completion: y, tag: {}}", "unknown fields"),
        ("{}", "non-empty YAML list"),
    ],
)
def test_bad_query_files_name_the_entry_and_field(tmp_path, text, message):
    path = tmp_path / "queries.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_queries(path)
    assert "queries.yaml" in str(error.value)


class CharTokenizer:
    def __call__(self, texts, add_special_tokens=True, truncation=True, max_length=None):
        return {"input_ids": [[ord(c) for c in t][:max_length] for t in texts]}


def test_token_store_round_trips_and_batches_by_length(tmp_path):
    corpus = pd.DataFrame({"seq_id": ["a", "b", "c", "d"], "text": ["hello", "x", "a longer text", "mid"]})
    table = tokenize_corpus(CharTokenizer(), corpus, max_tokens=8, out_dir=tmp_path)
    assert list(table["seq_id"]) == ["a", "c", "d"]  # "x" has one token: no next-token loss
    store = TokenStore(tmp_path)
    assert store.ids("c") == [ord(c) for c in "a longer"]
    batches = list(store.batches(["a", "d", "c"], batch_size=2))
    assert [ids for ids, _ in batches] == [["c", "a"], ["d"]]
    first = batches[0][1]
    assert first["attention_mask"].sum(1).tolist() == [8, 5] and (first["labels"][1, 5:] == -100).all()


def test_shards_partition_and_fitting_samples_are_reproducible():
    ids = [str(i) for i in range(10)]
    parts = [shard(ids, i, 3) for i in range(3)]
    assert sum(parts, []) == ids and max(map(len, parts)) - min(map(len, parts)) <= 1
    assert fitting_sample(ids, 4, seed=1) == fitting_sample(ids, 4, seed=1) != fitting_sample(ids, 4, seed=2)
    assert fitting_sample(ids, None, 0) == ids


def test_highlight_escapes_text_and_colours_by_sign():
    html = highlight(pd.DataFrame({"token": ["<b>", " ok"], "influence": [2.0, -1.0]}))
    assert "&lt;b&gt;" in html and "rgba(214,39,40,1.00)" in html and "rgba(31,119,180,0.50)" in html
