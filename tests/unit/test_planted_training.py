"""The planted-fact corpus and the tiny model trained on it."""

import numpy as np
import pytest
from influence.evaluation.planted import RELATIONS, VARIANTS, plant_facts, relevant_documents
from influence.evaluation.training import completion_stats, encode_texts, tiny_llama, train, word_tokenizer
from influence.queries import Query


def test_planted_corpus_states_each_fact_k_times():
    documents, queries = plant_facts(n_facts=8, k=3, n_distractors=2, seed=4)
    assert len(documents) == 8 * 5 and documents["seq_id"].is_unique
    relevant = relevant_documents(documents)
    assert len(relevant) == 8 and all(len(docs) == 3 for docs in relevant.values())
    by_id = {q["id"]: q for q in queries}
    assert len(queries) == 8 * len(VARIANTS)
    for fact_id, docs in relevant.items():
        original, flipped = by_id[f"{fact_id}_original"], by_id[f"{fact_id}_flipped"]
        answer = original["completion"].strip()
        subject = flipped["completion"].strip()
        texts = documents.set_index("seq_id").loc[sorted(docs), "text"]
        assert all(answer in t and subject in t for t in texts)  # every planted document states the fact
        assert len(set(texts)) == 3  # in three different wordings
        assert subject in original["prompt"] and answer in flipped["prompt"]
        assert by_id[f"{fact_id}_translated"]["tags"]["lang"] == "fr"
        distractors = documents[(documents["fact_id"] == fact_id) & (documents["role"] == "distractor")]["text"]
        assert all((answer in t) != (subject in t) for t in distractors)  # one entity, never the fact


def test_planted_corpus_is_seeded_and_checks_its_settings():
    a, _ = plant_facts(4, 2, 1, seed=0)
    b, _ = plant_facts(4, 2, 1, seed=0)
    c, _ = plant_facts(4, 2, 1, seed=1)
    assert a.equals(b) and not a.equals(c)
    with pytest.raises(ValueError, match="k"):
        plant_facts(4, len(RELATIONS[0].statements) + 1, 1)
    with pytest.raises(ValueError, match="n_facts"):
        plant_facts(0, 2, 1)


def test_tiny_model_learns_planted_facts():
    documents, raw = plant_facts(n_facts=4, k=3, n_distractors=1, seed=0)
    queries = [Query(q["id"], q["prompt"], q["completion"], q["tags"]) for q in raw]
    tokenizer = word_tokenizer(documents["text"].tolist() + [q.text for q in queries])
    ids = tokenizer("The capital of Zzz is").input_ids
    assert ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id in ids
    sequences = encode_texts(tokenizer, documents["text"].tolist(), 32)
    model = tiny_llama(len(tokenizer), 32, 64, 2, 4, seed=0)
    originals = [q for q in queries if q.tags["variant"] == "original"]
    before, _ = completion_stats(model, tokenizer, originals)
    history = train(
        model,
        sequences,
        120,
        3e-3,
        8,
        seed=0,
        progress=False,
        stop=lambda m: completion_stats(m, tokenizer, originals)[1].all(),
    )
    after, correct = completion_stats(model, tokenizer, originals)
    assert history[-1] < history[0] / 2 and np.all(after > before)
    assert correct.all()  # training stopped because every original query is answered


def test_tiny_model_names_a_bad_head_count():
    with pytest.raises(ValueError, match="n_heads"):
        tiny_llama(10, 30, 16, 1, 4, seed=0)
