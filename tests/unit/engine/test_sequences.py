"""The token store, shards and fitting samples (engine/sequences)."""

import pandas as pd
from influence.engine.sequences import TokenStore, fitting_sample, shard, tokenize_corpus


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
