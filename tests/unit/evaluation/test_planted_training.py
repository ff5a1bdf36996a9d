"""The planted-fact corpus and the tiny model trained on it."""

import numpy as np
import pytest
from influence.evaluation.planted import RELATIONS, VARIANTS, plant_facts, relevant_documents
from influence.evaluation.training import completion_stats, encode_texts, tiny_llama, train, word_tokenizer
from influence.inputs.queries import Query


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


def _hard():
    from influence.evaluation.planted import DIFFICULTIES  # noqa: F401 (the difficulty is a config value)

    return plant_facts(n_facts=8, k=3, n_distractors=2, seed=3, difficulty="hard", fillers=3)


def test_hard_corpus_has_both_entity_distractors_that_state_no_fact():
    from influence.evaluation.planted_hard import HARD, content_words

    documents, queries = _hard()
    facts = {q["tags"]["fact_id"]: q["tags"] for q in queries}
    statements = {
        (t["subject"], t["object"]): {w.format(s=t["subject"], o=t["object"]) for r in RELATIONS for w in r.statements}
        | {w.format(s=t["subject"], o=t["object"]) for plants, _ in HARD.values() for w in plants}
        for t in facts.values()
    }
    for fact_id, tags in facts.items():
        both = documents[(documents["fact_id"] == fact_id) & (documents["role"] == "both_entities")]["text"]
        assert len(both) == 2
        relation_words = set().union(
            *(content_words(w) for w in next(r for r in RELATIONS if r.name == tags["relation"]).statements)
        )
        relation_words |= set().union(*(content_words(w) for w in HARD[tags["relation"]][0]))
        for text in both:
            assert tags["subject"] in text and tags["object"] in text
            # it is no statement of any relation about any pair in the fact table, nor uses the relation's words
            assert all(text not in stated for stated in statements.values())
            assert not content_words(text, (tags["subject"], tags["object"])) & relation_words, text
    fillers = documents[documents["role"] == "relation_words"]
    entities = {t[k] for t in facts.values() for k in ("subject", "object")}
    # 4 relations x 3 filler facts, each in the main wording, the 3 plant wordings and the 3 both-entity contexts
    assert len(fillers) == 4 * 3 * 7 and fillers["fact_id"].str.startswith("fillers_").all()
    assert not any(e in text.split() or e + "." in text for text in fillers["text"] for e in entities)
    for relation in RELATIONS:
        texts = fillers[fillers["fact_id"] == f"fillers_{relation.name}"]["text"]
        assert sum(relation.statements[0].split("{s}")[0] in t for t in texts) == 3  # the query's wording, once each


def test_hard_plants_cannot_be_told_from_both_entity_distractors_by_length():
    # TF-IDF's length normalisation would otherwise pick "the shortest documents naming both entities"
    from influence.evaluation.planted_hard import HARD, content_words

    for relation, (plants, both) in HARD.items():
        for count in (lambda t: len(t.split()), lambda t: len(content_words(t))):
            assert np.mean([count(t) for t in plants]) == np.mean([count(t) for t in both]), relation


def test_hard_plants_never_use_the_query_wording():
    from influence.evaluation.planted_hard import content_words

    documents, queries = _hard()
    plants = documents[documents["role"] == "planted"]
    for q in queries:
        if q["tags"]["lang"] != "en":
            continue
        entities = (q["tags"]["subject"], q["tags"]["object"])
        words = content_words(q["prompt"], entities)
        assert words  # the relation words
        for text in plants[plants["fact_id"] == q["tags"]["fact_id"]]["text"]:
            assert not content_words(text, entities) & words, (q["prompt"], text)
            assert q["prompt"] not in text
    easy, _ = plant_facts(n_facts=8, k=3, n_distractors=2, seed=3)
    planted = documents[documents["role"] != "relation_words"]
    assert set(easy["fact_id"]) == set(planted["fact_id"])  # the same facts on both difficulties
    with pytest.raises(ValueError, match="evaluation.planted.difficulty"):
        plant_facts(2, 1, 1, difficulty="medium")


@pytest.mark.slow  # 56 s on 2 cores: trains the tiny model on the hard corpus
def test_bm25_no_longer_finds_the_hard_plants_but_the_model_learns_the_facts():
    import torch
    from influence.evaluation.baselines import bm25_scores
    from influence.evaluation.measures import recall_at_k

    recalls = {}
    for difficulty in ("easy", "hard"):
        documents, raw = plant_facts(n_facts=12, k=3, n_distractors=2, seed=0, difficulty=difficulty, fillers=12)
        scores = bm25_scores(documents["text"].tolist(), [q["prompt"] + q["completion"] for q in raw])
        relevant = np.array(
            [(documents["role"] == "planted") & (documents["fact_id"] == q["tags"]["fact_id"]) for q in raw]
        )
        recalls[difficulty] = (recall_at_k(scores, relevant, 3).mean(), recall_at_k(scores, relevant, 10).mean())
    assert recalls["easy"][1] == 1.0  # easy: every plant in BM25's top 10
    assert recalls["hard"][0] < 0.65  # hard: about half of the plants in its top k = 3 (plants per fact)
    torch.set_num_threads(1)
    documents, raw = plant_facts(n_facts=12, k=3, n_distractors=2, seed=0, difficulty="hard", fillers=12)
    queries = [Query(q["id"], q["prompt"], q["completion"], q["tags"]) for q in raw]
    tokenizer = word_tokenizer(documents["text"].tolist() + [q.text for q in queries])
    sequences = encode_texts(tokenizer, documents["text"].tolist(), 32)
    without = [s for s, role in zip(sequences, documents["role"]) if role != "planted"]
    learned = {}
    for name, data in (("with", sequences), ("without", without)):
        model = tiny_llama(len(tokenizer), 32, 64, 2, 4, seed=0)
        train(model, data, 150, 3e-3, 16, seed=0, progress=False)  # eval_quick's recipe
        learned[name] = completion_stats(model, tokenizer, queries)
    # The paraphrase-only plants teach the facts, asked in the query's wording the plants never use: the filler
    # facts (stated in both wordings, in separate documents) teach that the wordings say the same thing.
    variants = np.array([q.tags["variant"] for q in queries])
    original = variants == "original"
    assert learned["with"][1][original].mean() >= 0.5  # measured 1.00 (12 of 12)
    assert learned["without"][1][original].mean() <= 0.1  # measured 0 of 12: invented names are not guessed
    for variant in ("original", "flipped"):
        chosen = variants == variant
        assert learned["with"][0][chosen].mean() > learned["without"][0][chosen].mean() + 1.0, variant
