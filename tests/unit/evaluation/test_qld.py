"""QLD: removal sets, shared retrains, the measure by hand, and a real retrain on a toy whose answer is known."""

import numpy as np
import pandas as pd
import pytest
import torch
from influence.evaluation.planted import plant_facts
from influence.evaluation.qld import RANDOM, plan_retrains, qld_values, random_sets, top_k_sets
from influence.evaluation.retrain import cached_retrains
from influence.evaluation.training import encode_texts, retrain_tiny, tiny_llama, train, word_tokenizer
from influence.inputs.queries import Query


def test_top_k_and_random_sets():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [1.0, 0.0, 0.2, 0.3]])
    np.testing.assert_array_equal(top_k_sets(scores, 2), [[1, 3], [0, 3]])
    with pytest.raises(ValueError, match="evaluation.qld.k"):
        top_k_sets(scores, 5)
    controls = random_sets(2, 10, 3, 4, np.random.default_rng(0))
    assert controls.shape == (4, 2, 3) and all(len(set(row)) == 3 for row in controls.reshape(-1, 3))


def test_retrains_are_shared_only_between_independent_queries():
    doc_facts = ["f0", "f0", "f1", "f1", "f2", "f2"]
    sets = {
        ("a", 0): np.array([[0], [2], [4]]),  # each query removes its own fact's document
        ("b", 0): np.array([[0], [3], [2]]),  # b's query 2 removes a document of fact f1
        (RANDOM, 1): np.array([[1], [5], [3]]),
    }
    plan = plan_retrains(sets, ["f0", "f1", "f2"], doc_facts, max_per_retrain=3)
    for r in plan:
        queries = [q for _, _, q in r.members]
        facts = [["f0", "f1", "f2"][q] for q in queries]
        assert len(set(facts)) == len(r.facts)  # one query per fact (or the same query with the same set)
        for (m, c, q), own in zip(r.members, r.sets):
            assert own == set(sets[(m, c)][q].tolist())
            others = set().union(*[s for s, (_, _, q2) in zip(r.sets, r.members) if q2 != q])
            assert ["f0", "f1", "f2"][q] not in {doc_facts[i] for i in others}  # nobody else removes my fact's docs
    shared = [r for r in plan if ("a", 0, 0) in r.members][0]
    assert ("b", 0, 0) in shared.members  # a and b chose the same document for query 0: one retrain
    assert sum(len(r.members) for r in plan) == 9
    assert len(plan) < 9
    alone = plan_retrains(sets, ["f0", "f1", "f2"], doc_facts, max_per_retrain=1)
    assert all(len(r.facts) == 1 for r in alone)


def test_a_query_is_never_measured_on_a_retrain_that_removes_documents_it_depends_on():
    # q0 (fact f0) and q1 (fact f1) both depend on the filler documents of their relation ("fill"); method a
    # removes a filler document for q0, so q1 cannot share that retrain; q2 depends on nothing removed.
    doc_facts = ["f0", "f1", "fill", "f2", "x", "y"]
    sets = {("a", 0): np.array([[2], [4], [5]])}
    plan = plan_retrains(sets, ["f0", "f1", "f2"], doc_facts, max_per_retrain=3, shared=["fill", "fill", "other"])
    with_filler = next(r for r in plan if 2 in r.removed)
    assert [q for _, _, q in with_filler.members] == [0, 2]
    assert len(plan) == 2
    # without the dependency, all three share one retrain
    assert len(plan_retrains(sets, ["f0", "f1", "f2"], doc_facts, max_per_retrain=3)) == 1


def test_qld_values_by_hand():
    outcomes = pd.DataFrame(
        [
            ("good", 0, "q", 5.0),
            (RANDOM, 1, "q", 2.0),
            (RANDOM, 2, "q", 3.0),
            ("bad", 0, "q", 1.0),
        ],
        columns=["method", "control", "query_id", "loss"],
    )
    values = qld_values(outcomes, {"q": 1.5}).set_index("method")
    assert values.loc["good", "qld"] == pytest.approx(2.5) and values.loc["good", "raw"] == pytest.approx(3.5)
    assert values.loc["bad", "qld"] == pytest.approx(-1.5)
    assert values.loc[RANDOM, "raw"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    documents, raw = plant_facts(n_facts=4, k=3, n_distractors=2, seed=0)
    queries = [
        Query(q["id"], q["prompt"], q["completion"], q["tags"]) for q in raw if q["tags"]["variant"] == "original"
    ]
    tokenizer = word_tokenizer(documents["text"].tolist() + [q.text for q in queries])
    sequences = encode_texts(tokenizer, documents["text"].tolist(), 32)
    tiny = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "n_layers": 2,
        "n_heads": 4,
        "epochs": 60,
        "lr": 3e-3,
        "batch_size": 8,
    }
    return documents, queries, tokenizer, sequences, tiny


def test_removing_the_plants_raises_the_loss_more_than_random_and_ranks_methods(toy):
    documents, queries, tokenizer, sequences, tiny = toy
    planted = np.array(
        [(documents["role"] == "planted") & (documents["fact_id"] == q.tags["fact_id"]) for q in queries], float
    )  # (Q, N)
    noise = np.random.default_rng(0).random(planted.shape) * 0.1
    oracle, reversed_ = planted + noise, -(planted + noise)
    sets = {("oracle", 0): top_k_sets(oracle, 3), ("reversed", 0): top_k_sets(reversed_, 3)}
    controls = random_sets(len(queries), len(documents), 3, 2, np.random.default_rng(1))
    sets.update({(RANDOM, c): controls[c] for c in range(2)})
    plan = plan_retrains(sets, [q.tags["fact_id"] for q in queries], documents["fact_id"].tolist(), 4)
    keeps = [np.setdiff1d(np.arange(len(documents)), sorted(r.removed)) for r in plan]
    outcomes = [retrain_tiny(tokenizer, sequences, queries, keep, tiny, seed=0) for keep in keeps]
    full = retrain_tiny(tokenizer, sequences, queries, np.arange(len(documents)), tiny, seed=0)
    table = pd.DataFrame(
        [(m, c, queries[q].id, -float(outcomes[i][q])) for i, r in enumerate(plan) for m, c, q in r.members],
        columns=["method", "control", "query_id", "loss"],
    )
    values = (
        qld_values(table, {q.id: -float(v) for q, v in zip(queries, full)}).groupby("method")[["qld", "raw"]].mean()
    )
    # The fact's documents carry the answer: removing them costs far more than removing 3 random ones.
    assert values.loc["oracle", "qld"] > 1.0 and values.loc["oracle", "raw"] > values.loc[RANDOM, "raw"] + 1.0
    assert values.loc["oracle", "qld"] > values.loc["reversed", "qld"] + 1.0


def test_a_diverging_retrain_stops_naming_it_and_keeps_finished_ones(tmp_path):
    calls = []

    def measure(keep):
        calls.append(len(keep))
        if len(calls) == 2:
            raise FloatingPointError("training loss is nan at epoch 3")
        return np.ones(2)

    keeps = [np.arange(3), np.arange(4), np.arange(5)]
    with pytest.raises(FloatingPointError, match=r"LDS subset 1 \(seed 7\) diverged.*1 finished"):
        cached_retrains(keeps, measure, tmp_path, {"lr": 1}, ["LDS subset 0", "LDS subset 1", "LDS subset 2"], 7)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    calls.clear()
    out = cached_retrains(keeps, lambda keep: np.full(2, len(keep)), tmp_path, {"lr": 1}, ["a", "b", "c"], 7)
    assert [o[0] for o in out] == [1.0, 4.0, 5.0]  # the first came from the cache (measured as ones)


def test_training_stops_on_a_nan_loss():
    tokenizer = word_tokenizer(["a b c d"])
    model = tiny_llama(len(tokenizer), 8, 8, 1, 2, seed=0)
    with pytest.raises(FloatingPointError, match="training loss is nan at epoch"):
        train(model, [[2, 3, 4, 5]] * 4, 3, lr=1e30, batch_size=2, seed=0, progress=False)
