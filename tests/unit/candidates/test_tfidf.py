"""Streaming TF-IDF prefilter: equals scikit-learn, independent of chunking, bounded."""

import numpy as np
import pandas as pd
import pytest
from influence.candidates.tfidf import (
    TOKEN_PATTERN,
    IdfModel,
    TfidfSettings,
    candidate_union,
    fit_idf,
    sample_tfidf_ranks,
    top_k_candidates,
    top_k_mask,
)
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer

CORPUS = [
    "Paris: the capital and largest city of France",
    "Lyon: a city in east-central France on the Rhone",
    "Berlin: the capital of Germany, on the Spree",
    "capital: wealth in the form of money or property",
    "river: a large natural stream of water",
    "Rhone: a European river that flows into the Mediterranean",
    "bank: sloping land beside a body of water such as a river",
    "bank: a financial institution that accepts deposits and lends money",
    "money: the most common medium of exchange",
    "France: a republic in western Europe; the largest country wholly in Europe",
    "city: a large and densely populated urban area",
    "Mediterranean: the largest inland sea, between Europe and Africa",
]
QUERIES = {
    "q_paris": "What is the capital of France?",
    "q_bank": "The river bank was covered in water",
    "q_money": "lends money to people",
}


def _chunks(texts: list[str], size: int, start: int = 0):
    for i in range(0, len(texts), size):
        yield pd.DataFrame(
            {"seq_id": [f"d{j + start}" for j in range(i, min(i + size, len(texts)))], "text": texts[i : i + size]}
        )


def _rank(texts, queries, k, chunk_size=10_000, settings=None, n_jobs=1):
    model = fit_idf(_chunks(texts, chunk_size), settings, n_jobs=n_jobs, progress=False)
    return top_k_candidates(model, _chunks(texts, chunk_size), queries, k, n_jobs=n_jobs, progress=False)


def _sklearn_scores(texts, queries, sublinear_tf=False) -> np.ndarray:
    vec = TfidfVectorizer(token_pattern=TOKEN_PATTERN, smooth_idf=True, norm="l2", sublinear_tf=sublinear_tf)
    docs = vec.fit_transform(texts)
    return (vec.transform(list(queries.values())) @ docs.T).toarray()


def _random_corpus(n_docs: int, seed: int = 0) -> list[str]:
    # a tiny vocabulary makes many exact score ties, the hard case for chunking
    rng = np.random.default_rng(seed)
    words = np.array(["alpha", "beta", "gamma", "delta", "eps", "Zeta", "eta", "theta", "iota", "kappa", "x"])
    return [" ".join(rng.choice(words, size=rng.integers(0, 6))) for _ in range(n_docs)]


@pytest.mark.parametrize("sublinear_tf", [False, True])
def test_scores_equal_sklearn_tfidf(sublinear_tf):
    texts = CORPUS + ["bank bank bank money money river"]  # repeated terms exercise sublinear tf
    table = _rank(texts, QUERIES, k=0, settings=TfidfSettings(sublinear_tf=sublinear_tf))
    expected = _sklearn_scores(texts, QUERIES, sublinear_tf)
    got = table.pivot(index="query_id", columns="seq_id", values="tfidf_score")
    got = got.loc[list(QUERIES), [f"d{j}" for j in range(len(texts))]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_top_k_sets_equal_sklearn():
    k = 3
    expected = _sklearn_scores(CORPUS, QUERIES)
    table = _rank(CORPUS, QUERIES, k)
    for i, qid in enumerate(QUERIES):
        order = np.argsort(-expected[i], kind="stable")
        assert expected[i, order[k - 1]] - expected[i, order[k]] > 1e-9, "test corpus must not tie at the k boundary"
        got = table[table["query_id"] == qid]
        assert set(got["seq_id"]) == {f"d{j}" for j in order[:k]}
        np.testing.assert_allclose(got["tfidf_score"], expected[i, order[:k]], atol=1e-6)
        assert got["tfidf_rank"].tolist() == [1, 2, 3]


ASCII_EDGES = ["", "a I 3 __ x_y 42", "UPPER lower MiXeD", "tab\tnew\nline", "it's-a c++ e.g. 3.14"]


@pytest.mark.parametrize(
    "extra",
    [[], ["naïve café — 東京 straße"], ["nul\x00byte inside"]],
    ids=["ascii-fast-path", "mixed-ascii-unicode", "separator-in-text"],
)
@pytest.mark.parametrize("lowercase", [True, False])
def test_vectorizer_equals_hashing_vectorizer(extra, lowercase):
    texts = CORPUS + _random_corpus(50) + ASCII_EDGES + extra
    ours = TfidfSettings(lowercase=lowercase).vectorizer().transform(texts)
    ref = HashingVectorizer(
        n_features=TfidfSettings().n_features, alternate_sign=False, norm=None, lowercase=lowercase
    ).transform(texts)
    assert ours.has_canonical_format
    assert (ours != ref).nnz == 0


def test_identical_document_ranks_first():
    queries = {"same": CORPUS[5], "other": CORPUS[9]}
    table = _rank(CORPUS, queries, k=2)
    top = table[table["tfidf_rank"] == 1].set_index("query_id")
    assert top.loc["same", "seq_id"] == "d5" and top.loc["other", "seq_id"] == "d9"
    np.testing.assert_allclose(top["tfidf_score"], 1.0, atol=1e-12)


def test_k_zero_and_none_keep_every_candidate():
    for k in (0, None):
        table = _rank(CORPUS, QUERIES, k)
        assert len(table) == len(QUERIES) * len(CORPUS)
        assert table.groupby("query_id")["seq_id"].nunique().eq(len(CORPUS)).all()


def test_chunked_equals_unchunked_with_ties():
    texts = _random_corpus(400)
    queries = {"q1": "alpha beta", "q2": "zeta zeta eta", "q3": "kappa", "q4": "unseen words only"}
    with pytest.warns(UserWarning, match="q4"):
        whole = _rank(texts, queries, k=25, chunk_size=10_000)
    with pytest.warns(UserWarning):
        small = _rank(texts, queries, k=25, chunk_size=7)
    pd.testing.assert_frame_equal(small, whole)
    assert whole.groupby("query_id")["tfidf_score"].apply(lambda s: s.is_monotonic_decreasing).all()


def test_worker_processes_give_the_same_table():
    texts = _random_corpus(300, seed=1)
    queries = {"q1": "alpha beta", "q2": "theta iota"}
    pd.testing.assert_frame_equal(_rank(texts, queries, 10, chunk_size=40, n_jobs=2), _rank(texts, queries, 10))


def test_state_is_bounded_by_queries_times_k():
    texts = _random_corpus(500, seed=2)
    queries = {f"q{i}": t for i, t in enumerate([t for t in texts if t][:6])}
    table = _rank(texts, queries, k=5, chunk_size=64)
    assert len(table) <= len(queries) * 5
    assert table.groupby("query_id").size().eq(5).all()
    assert (table.groupby("query_id")["tfidf_rank"].max() == 5).all()


def test_top_k_mask_breaks_ties_towards_earlier_columns():
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0]])
    keep = top_k_mask(scores, 2)
    assert keep.tolist() == [[True, True, False, False, False], [True, True, False, False, False]]
    assert top_k_mask(scores, 0) is None and top_k_mask(scores, 5) is None


def test_idf_model_save_load_round_trip(tmp_path):
    settings = TfidfSettings(n_features=2**18, sublinear_tf=True)
    model = fit_idf([CORPUS[:5], CORPUS[5:]], settings, progress=False)
    assert model.n_docs == len(CORPUS)
    model.save(tmp_path / "idf.safetensors")
    back = IdfModel.load(tmp_path / "idf.safetensors")
    assert back.settings == settings and back.n_docs == model.n_docs
    np.testing.assert_array_equal(back.idf, model.idf)
    assert not list(tmp_path.glob("*.partial"))


def test_load_rejects_other_files(tmp_path):
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"kind": "factors"})
    with pytest.raises(ValueError, match="not an IDF model"):
        IdfModel.load(tmp_path / "other.safetensors")


def test_candidate_union_and_bad_k():
    table = _rank(CORPUS, QUERIES, k=2)
    ids = candidate_union(table)
    assert ids == sorted(set(table["seq_id"])) and len(ids) <= 2 * len(QUERIES)
    with pytest.raises(ValueError, match="k must be >= 0"):
        _rank(CORPUS, QUERIES, k=-1)


def test_sample_ranks_follow_the_ranking_rule():
    model = fit_idf([CORPUS], TfidfSettings(n_features=2**18), progress=False)
    docs = [CORPUS[0], CORPUS[0], "zzz qqq"]  # two identical documents tie; the last matches nothing
    ranks = sample_tfidf_ranks(model, {"q": CORPUS[0]}, ["s2", "s1", "s3"], docs)
    assert ranks["seq_id"].tolist() == ["s1", "s2", "s3"] and ranks["tfidf_rank"].tolist() == [1, 2, 3]
    assert ranks["tfidf"].iloc[0] == ranks["tfidf"].iloc[1] > ranks["tfidf"].iloc[2]
