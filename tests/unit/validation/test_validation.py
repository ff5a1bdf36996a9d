"""snakemake validate's library: further training agrees with gradient dot to first order, the plan's draws and
checks, the measures against hand computations, and a diverging recipe stopping without losing finished trainings."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_llama
from influence.engine.api import precondition
from influence.engine.data import pad_batch, query_batches
from influence.engine.model import select_layers
from influence.engine.scores import score_many
from influence.evaluation.measures import lds
from influence.evaluation.retrain import cached_retrains
from influence.evaluation.training import further_trainer, word_tokenizer
from influence.inputs.queries import Query
from influence.validation import measures, plan

WORDS = "the a red blue green cat dog bird sees eats likes runs far near big small old new".split()
MODEL = {"dtype": "float64", "device": "cpu", "trust_remote_code": False}
LAYERS = r"(mlp|self_attn)\.\w+_proj$"  # every projection: the training moves only these (recipe `layers`)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Llama over a word-level tokenizer, saved; 24 sequences of 9 tokens; 3 queries."""
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 8)) for _ in range(24)]
    queries = [Query("q0", "the red cat", " sees"), Query("q1", "a big dog", " eats"), Query("q2", "the bird", " runs")]
    tokenizer = word_tokenizer(texts + [q.text for q in queries])
    directory = tmp_path_factory.mktemp("validation") / "model"
    tiny_llama(vocab=len(tokenizer), seed=1).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    sequences = tokenizer(texts, add_special_tokens=True)["input_ids"]
    assert len({len(s) for s in sequences}) == 1  # equal lengths: every subset's mean token loss has one scale
    return directory, tokenizer, sequences, queries


def test_one_small_sgd_step_makes_gradient_dot_the_exact_predictor(checkpoint):
    """One full-batch SGD step at a small lr changes log p(q) by lr/n · Σ_{z∈S} ⟨∇log p(q), −∇L(z)⟩ to first
    order, so gradient dot's further-training LDS is 1 up to second-order terms."""
    directory, tokenizer, sequences, queries = checkpoint
    model = tiny_llama(vocab=len(tokenizer), seed=1)
    layers = select_layers(model, LAYERS)
    pre = precondition(model, layers, [q.id for q in queries], query_batches(tokenizer, queries), estimator="identity")
    scores = score_many(model, layers, {"identity": pre}, [pad_batch(sequences)], dtype=torch.float64)
    scores = scores["identity"].total.T.numpy()  # (Q, N)
    rng = np.random.default_rng(0)
    keeps = [np.sort(rng.choice(24, size=12, replace=False)) for _ in range(12)]
    recipe = {"optimizer": "sgd", "lr": 1e-4, "epochs": 1, "batch_size": 12, "seed": 0, "layers": LAYERS}
    measure = further_trainer(directory, MODEL, tokenizer, sequences, queries, recipe)
    actual = np.stack([measure(keep) for keep in keeps])  # (M, Q)
    masks = np.zeros((12, 24))
    for m, keep in enumerate(keeps):
        masks[m, keep] = 1
    assert lds(scores, masks, actual).min() >= 0.99
    # and a random scorer does not pass the same test
    assert lds(np.random.default_rng(1).standard_normal(scores.shape), masks, actual).max() < 0.99


def test_a_diverging_recipe_names_the_training_and_keeps_the_finished_ones(checkpoint, tmp_path):
    directory, tokenizer, sequences, queries = checkpoint
    good = further_trainer(
        directory, MODEL, tokenizer, sequences, queries, {"lr": 1e-3, "epochs": 1, "batch_size": 4, "seed": 0}
    )
    cache = tmp_path / "retrains"
    cached_retrains([np.arange(4)], good, cache, {"recipe": "good"}, ["training t0000"], 0)
    wild = further_trainer(
        directory,
        MODEL,
        tokenizer,
        sequences,
        queries,
        {"optimizer": "sgd", "lr": 1e12, "epochs": 3, "batch_size": 4, "seed": 0},
    )
    with pytest.raises(
        FloatingPointError, match=r"training t0001 \(seed 0\) diverged.*1 finished.*validate\.recipe\.lr"
    ):
        cached_retrains(
            [np.arange(4, 8)], wild, cache, {"recipe": "wild"}, ["training t0001"], 0, hint="lower validate.recipe.lr"
        )
    assert len(list(cache.glob("*.npy"))) == 1


SETTINGS = {
    "n_queries": 2, "seed": 0, "estimators": ["ekfac", "identity"], "baselines": ["bm25"], "n_random_candidates": 4,
    "top_k": 2, "n_controls": 3, "n_subsets": 4, "fraction": 0.5, "n_parts": 2,
    "recipe": {"optimizer": "adamw", "lr": 1e-4, "epochs": 1, "batch_size": 8, "seed": 0},
}  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"fraction": 1.0}, "validate.fraction is 1.0"),
        ({"fraction": 0}, "validate.fraction is 0"),
        ({"estimators": ["ekfac", "tfidf"]}, r"validate.estimators: \['tfidf'\]"),
        ({"baselines": ["ekfac"]}, r"validate.baselines: \['ekfac'\]"),
        ({"recipe": {**SETTINGS["recipe"], "optimizer": "lion"}}, "validate.recipe.optimizer 'lion'"),
        ({"recipe": {**SETTINGS["recipe"], "lr": 0}}, "validate.recipe.lr is 0"),
    ],
)
def test_bad_settings_name_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        plan.check_settings({**SETTINGS, **change}, "ekfac")


def test_top_k_beyond_half_the_candidates_is_refused():
    plan.check_top_k(5, 10)
    with pytest.raises(ValueError, match="validate.top_k is 6 but the candidates number 10"):
        plan.check_top_k(6, 10)


def _scores(methods, queries, seqs, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        [(m, q, s, rng.standard_normal()) for m in methods for q in queries for s in seqs],
        columns=["method", "query_id", "seq_id", "score"],
    )


def test_plan_shares_trainings_and_draws_the_same_again():
    seqs = [f"s{i:02d}" for i in range(20)]
    methods = plan.methods(SETTINGS, "ekfac")
    assert methods == ["ekfac", "identity", "bm25", "random"]
    scores = _scores(methods, ["q0", "q1"], seqs)
    scores.loc[scores["method"] == "identity", "score"] = scores.loc[scores["method"] == "ekfac", "score"].to_numpy()
    extremes = plan.extremes(scores, 2)
    assert set(extremes.loc[extremes["method"] == "bm25", "kind"]) == {"proponents"}  # baselines: no opponents
    top = extremes[
        (extremes["method"] == "ekfac") & (extremes["kind"] == "proponents") & (extremes["query_id"] == "q0")
    ]
    q0 = scores[(scores["method"] == "ekfac") & (scores["query_id"] == "q0")].nlargest(2, "score")
    assert top["seq_id"].tolist() == q0["seq_id"].tolist()
    pool = plan.pool_table(extremes[extremes["kind"] == "proponents"], ["s19"])
    schedule, trainings = plan.plan_trainings(extremes, pool, SETTINGS)
    same = schedule[schedule["kind"].isin(["proponents", "opponents"]) & schedule["method"].isin(["ekfac", "identity"])]
    assert same.groupby(["kind", "query_id"])["training_id"].nunique().eq(1).all()  # one training for equal k-sets
    sizes = trainings.groupby("training_id").size()
    lds_ids = schedule.loc[schedule["kind"] == "lds", "training_id"]
    assert (sizes[lds_ids] == round(0.5 * len(pool))).all() and len(lds_ids) == 4
    repeats = schedule[schedule["kind"] == "repeat"]
    assert len(repeats) == 3 + 2 and (trainings.set_index("training_id").loc[repeats["training_id"], "seed"] == 1).all()
    again = plan.plan_trainings(extremes, pool, SETTINGS)
    pd.testing.assert_frame_equal(again[1], trainings)
    parts = [plan.part_of(trainings, p, 2) for p in range(2)]
    assert sorted(pd.concat(parts)["training_id"].unique()) == sorted(trainings["training_id"].unique())


def test_measures_by_hand():
    """Rises minus the controls' mean; LDS of a scorer that is the outcome itself is 1; the noise floor."""
    schedule = pd.DataFrame(
        [("proponents", "m", "q0", 0, "t0"), ("control", "", "", 0, "t1"), ("control", "", "", 1, "t2"),
         ("repeat", "control", "", 0, "t3"), ("repeat", "control", "", 1, "t4"),
         *[("lds", "", "", i, f"l{i}") for i in range(4)]],
        columns=plan.PLAN_COLUMNS,
    )  # fmt: skip
    subsets = {"l0": ["a", "b"], "l1": ["a", "c"], "l2": ["b", "d"], "l3": ["c", "d"]}
    trainings = pd.DataFrame(
        [(t, 0, s) for t, seqs in subsets.items() for s in seqs] + [("t0", 0, "a"), ("t1", 0, "b"), ("t2", 0, "c")],
        columns=plan.TRAINING_COLUMNS,
    )
    weights = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}
    logp = {"t0": 2.0, "t1": 1.0, "t2": 0.5, "t3": 1.2, "t4": 0.5}
    logp.update({t: sum(weights[s] for s in seqs) for t, seqs in subsets.items()})
    outcomes = pd.DataFrame([(t, "q0", v) for t, v in logp.items()], columns=["training_id", "query_id", "log_prob"])
    base = pd.DataFrame({"query_id": ["q0"], "log_prob": [0.0]})
    scores = pd.DataFrame(
        [("m", "q0", s, w) for s, w in weights.items()], columns=["method", "query_id", "seq_id", "score"]
    )
    values, noise = measures.per_query(schedule, trainings, outcomes, base, scores, list(weights))
    effect = values.set_index(["measure", "method"])["value"]
    assert effect["proponents", "m"] == pytest.approx(2.0 - 0.75)
    assert effect["lds", "m"] == pytest.approx(1.0)
    assert noise["control_sd"].iloc[0] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert noise["seed_sd"].iloc[0] == pytest.approx(np.sqrt((0.2**2 + 0.0**2) / 2 / 2))
    table = measures.summary(values, noise, "m")
    assert list(table.columns) == measures.TABLE_COLUMNS
    assert set(table["measure"]) == {"proponents", "lds"}
