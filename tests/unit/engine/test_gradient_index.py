"""Index shards: sharded equals unsharded, refusal of another model/projection/corpus, faiss search."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import random_sequences, tiny_llama
from influence.candidates.gradient_index import build_shard, indexed_sequences, tfidf_recall_of_index
from influence.engine import integrity, names
from influence.engine.files import write_table
from influence.engine.index import corpus_digest, load_index, recall_at_n, save_shard, search
from influence.engine.model import fingerprint, select_layers
from influence.engine.projection import ProjectionSpec
from influence.engine.sequences import SEQUENCES, TOKENS, TokenStore

SPEC = ProjectionSpec(k=4, seed=7)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tokenised corpus of 11 random sequences on disk, as tokenize_corpus writes it."""
    directory = tmp_path_factory.mktemp("corpus")
    sequences = random_sequences(11, seed=30)
    lengths = [len(s) for s in sequences]
    tokens = np.concatenate(sequences).astype(np.int32)
    np.save(directory / TOKENS, tokens)
    table = pd.DataFrame(
        {
            "seq_id": [f"s{i}" for i in range(11)],
            "text": "",
            "n_tokens": lengths,
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]),
        }
    )
    write_table(table, directory / SEQUENCES, tokens_checksum=integrity.digest_arrays([(TOKENS, tokens)]))
    return directory


@pytest.fixture(scope="module")
def model():
    return tiny_llama(dtype=torch.float32)


def _build(model, corpus, n_shards, spec=SPEC):
    layers = select_layers(model)
    store = TokenStore(corpus)
    ids = indexed_sequences(store, 9, seed=spec.seed)
    return [build_shard(model, layers, spec, store, ids, i, n_shards, 3, progress=False) for i in range(n_shards)]


def test_sharded_index_equals_unsharded(model, corpus):
    (whole_ids, whole, whole_norms), *_ = _build(model, corpus, 1)
    parts = _build(model, corpus, 3)
    ids = [s for part in parts for s in part[0]]
    assert sorted(ids) == sorted(whole_ids) and len(ids) == 9  # a seeded subset of 9 of the 11
    position = [whole_ids.index(s) for s in ids]
    torch.testing.assert_close(torch.cat([p[1] for p in parts]), whole[position], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([p[2] for p in parts]), whole_norms[position], rtol=1e-5, atol=1e-6)


def _save(tmp_path, model, corpus, spec=SPEC, digest=None):
    layers = select_layers(model)
    paths = []
    for i, (ids, vectors, norms) in enumerate(_build(model, corpus, 2, spec)):
        paths.append(tmp_path / f"shard_{i}.safetensors")
        save_shard(
            paths[-1],
            vectors.half(),
            norms,
            ids,
            spec,
            fingerprint(layers),
            corpus_digest=digest or corpus_digest(corpus),
        )
    return paths, fingerprint(layers)


def test_index_of_another_model_or_projection_is_refused_naming_both(tmp_path, model, corpus):
    paths, model_fp = _save(tmp_path, model, corpus)
    ids, vectors, norms = load_index(paths, SPEC.fingerprint(model_fp), corpus_digest(corpus))
    assert len(ids) == 9 and vectors.dtype == torch.float32 and vectors.shape == (9, 6 * 16)
    other_model = fingerprint(select_layers(tiny_llama(seed=1, dtype=torch.float32)))
    for wanted in (SPEC.fingerprint(other_model), ProjectionSpec(k=4, seed=8).fingerprint(model_fp)):
        with pytest.raises(ValueError, match="another model, layer set, projection or") as error:
            load_index(paths, wanted, corpus_digest(corpus))
        assert wanted in str(error.value) and SPEC.fingerprint(model_fp) in str(error.value)


def test_whitened_index_belongs_to_its_factor_fit():
    """A whitened index's fingerprint includes the eigenvalues it was whitened by; without them it is refused."""
    white = ProjectionSpec(k=4, seed=7, whiten=True)
    eigen = {"w": {n: torch.arange(1.0, 4.0) for n in (names.ACTIVATION_EIGENVALUES, names.GRADIENT_EIGENVALUES)}}
    refit = {"w": {**eigen["w"], names.GRADIENT_EIGENVALUES: torch.arange(1.0, 4.0) * 1.01}}
    assert white.fingerprint("m", eigen) == white.fingerprint("m", eigen)
    assert white.fingerprint("m", eigen) != white.fingerprint("m", refit)
    assert white.fingerprint("m", eigen) != SPEC.fingerprint("m")
    with pytest.raises(ValueError, match="index.whiten is true but no eigendecomposition.*eigen.safetensors"):
        white.fingerprint("m")
    top = ProjectionSpec(k=4, kind="eigen")  # the factors' top eigenvectors: also belongs to the fit
    assert top.fingerprint("m", eigen) != top.fingerprint("m", refit)
    with pytest.raises(ValueError, match="index.kind is eigen but no eigendecomposition"):
        top.fingerprint("m")


def test_index_of_another_corpus_is_refused(tmp_path, model, corpus):
    paths, model_fp = _save(tmp_path, model, corpus, digest="0123456789abcdef")
    with pytest.raises(ValueError, match="another corpus.*0123456789abcdef.*rebuild"):
        load_index(paths, SPEC.fingerprint(model_fp), corpus_digest(corpus))


def test_exact_search_returns_the_largest_inner_products_and_approximate_recall_is_measured():
    rng = np.random.default_rng(0)
    vectors, queries = rng.normal(size=(2000, 24)), rng.normal(size=(3, 24))
    scores, rows = search(queries, vectors, 10)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, expected, 1), rtol=1e-5)
    for method in ("ivf", "hnsw"):
        recall = recall_at_n(search(queries, vectors, 10, method)[1], rows)
        assert recall.shape == (3,) and ((0 <= recall) & (recall <= 1)).all()
    with pytest.raises(ValueError, match="index.search"):
        search(queries, vectors, 10, "annoy")


def test_tfidf_recall_of_index_counts_the_index_top_within_tfidf_top_k():
    top = pd.DataFrame({"query_id": "q", "seq_id": ["c", "a"]})
    sims = pd.DataFrame({"query_id": "q", "seq_id": list("abcd"), "tfidf": [0.9, 0.1, 0.5, 0.0]})
    table = tfidf_recall_of_index(top, sims, [1, 2, 4])
    assert table["recall"].tolist() == [0.5, 1.0, 1.0] and (table["n_indexed"] == 4).all()
