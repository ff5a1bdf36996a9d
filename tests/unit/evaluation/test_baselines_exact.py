"""BM25, LiSSA and the exact damped-Fisher influence against hand or dense computations."""

import numpy as np
import pytest
import torch
from helpers import batches_of, query_batch, random_sequences, tiny_llama
from influence.engine import names
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.model import select_layers
from influence.evaluation.baselines import bm25_scores, lissa, tfidf_scores
from influence.evaluation.exact import ExactFisher, fitting_gradients, ihvp_accuracy


def test_bm25_by_hand():
    docs = ["apple banana", "apple apple cherry", "durian"]
    scores = bm25_scores(docs, ["apple", "durian kiwi"])
    n, avg = 3, 2.0
    idf_apple, idf_durian = np.log(1 + (n - 2 + 0.5) / 2.5), np.log(1 + (n - 1 + 0.5) / 1.5)

    def term(tf, length, idf):
        return idf * tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * length / avg))

    np.testing.assert_allclose(scores[0], [term(1, 2, idf_apple), term(2, 3, idf_apple), 0])
    np.testing.assert_allclose(scores[1], [0, 0, term(1, 1, idf_durian)])
    lexical = tfidf_scores(docs, ["apple", "durian kiwi"])
    assert lexical[0].argmax() in (0, 1) and lexical[1].argmax() == 2


def test_exact_solve_equals_dense_solve():
    jac = torch.randn(7, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = ExactFisher(jac)
    v = torch.randn(20, 3, dtype=torch.float64)
    dense = jac.T @ jac / 7 + 0.05 * torch.eye(20, dtype=torch.float64)
    torch.testing.assert_close(exact.solve(v, 0.05), torch.linalg.solve(dense, v))
    assert exact.mean_eigenvalue == pytest.approx(float(torch.trace(jac.T @ jac / 7)) / 20)


def test_lissa_converges_to_the_solve():
    jac = torch.randn(6, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = ExactFisher(jac)
    v = torch.randn(10, 2, dtype=torch.float64)
    full = exact.fvp(batch_size=6)  # every row: a deterministic Fisher-vector product
    estimate = lissa(full, v, 0.5, exact.lissa_scale(0.5), depth=3000)
    torch.testing.assert_close(estimate, exact.solve(v, 0.5), rtol=1e-6, atol=1e-8)
    noisy = lissa(exact.fvp(batch_size=2), v, 0.5, exact.lissa_scale(0.5), depth=3000)
    assert (noisy - exact.solve(v, 0.5)).norm() / exact.solve(v, 0.5).norm() < 0.5
    with pytest.raises(ValueError, match="scale"):
        lissa(full, v, 0.5, 0.0, 10)


@pytest.fixture(scope="module")
def tiny():
    model = tiny_llama()
    return model, select_layers(model), batches_of(random_sequences(12, seed=3), 4)


def test_exact_fisher_sees_the_engines_label_samples(tiny):
    """Λ fitted by the engine equals the diagonal of the exact Fisher in the Kronecker eigenbasis."""
    model, layers, fit = tiny
    jac = fitting_gradients(model, layers, fit, "true", seed=5)  # (N, P)
    covariance = fit_covariance(model, layers, fit, "true", 5, torch.float64, progress=False, max_tokens=None)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(
        model, layers, eigen, fit, "true", 5, torch.float64, progress=False, max_tokens=None
    )
    start = 0
    for name, layer in layers.items():
        size = layer.d_out * layer.d_in_total
        grads = jac[:, start : start + size].reshape(-1, layer.d_out, layer.d_in_total)
        start += size
        q_a, q_s = eigen[name][names.ACTIVATION_EIGENVECTORS], eigen[name][names.GRADIENT_EIGENVECTORS]
        expected = (q_s.T @ grads @ q_a).square().mean(0)
        torch.testing.assert_close(correction.mean(name, names.EIGENVALUE_CORRECTION), expected)


def test_every_estimator_approaches_exact_influence_at_large_damping(tiny):
    """(F + λI)⁻¹ → I/λ as λ grows, so every estimator must converge to the exact scores."""
    model, layers, fit = tiny
    table, steps, subsets = ihvp_accuracy(
        model,
        layers,
        fit,
        [query_batch(3, seed=4)],
        ["q0", "q1", "q2"],
        fit,
        [1e-2, 1e7],
        ["true", "empirical"],
        0,
        {"depth": 50, "batch_size": 4},
        {"steps": 3, "tolerance": 0.0, "record_steps": 4},
        subset_fractions=[0.5, 1.0],
        subset_damping=1e-2,
    )
    assert set(table["estimator"]) == {"ekfac", "ekfac_cg", "kfac", "identity", "lissa", "block_exact"}
    assert sorted(steps["steps"].unique()) == [0, 1, 2, 3, 4] and (steps["estimator"] == "ekfac_cg").all()
    assert set(steps["preconditioner"]) == {"ekfac", "none"}
    at_zero = steps[(steps["steps"] == 0) & (steps["preconditioner"] == "ekfac")]
    at_zero = at_zero.set_index(["fisher", "damping", "query_id"])["relative_error"]
    ekfac = table[table["estimator"] == "ekfac"].set_index(["fisher", "damping", "query_id"])["relative_error"]
    np.testing.assert_allclose(at_zero.loc[ekfac.index], ekfac, rtol=1e-6)  # step 0 is EK-FAC
    small_steps = steps[steps["damping"] == 1e-2].groupby("steps")["relative_error"].mean()
    assert small_steps[4] < small_steps[0]  # CG improves on EK-FAC where the curvature matters
    large = table[table["damping"] == 1e7]
    assert (large["relative_error"] < 1e-4).all() and (large["spearman"] > 0.999).all()
    small = table[table["damping"] == 1e-2]
    assert (small[small["estimator"] == "identity"]["relative_error"] > 0.1).all()  # curvature matters here
    # by refinement-set size: half the fitting batches, and the full set = the table's ekfac_cg row
    assert sorted(subsets["fraction"].unique()) == [0.5, 1.0] and (subsets["damping"] == 1e-2).all()
    n = subsets.groupby("fraction")["n_sequences"].first()
    assert n[0.5] == sum(len(b["input_ids"]) for b in fit[: round(len(fit) / 2)]) and n[1.0] > n[0.5]
    full = subsets[subsets["fraction"] == 1.0].set_index(["fisher", "query_id"])["relative_error"]
    cg = small[small["estimator"] == "ekfac_cg"].set_index(["fisher", "query_id"])["relative_error"]
    np.testing.assert_allclose(full.loc[cg.index], cg)


def test_block_exact_equals_exact_for_one_layer_and_a_dense_block_solve(tiny):
    model, layers, fit = tiny
    from influence.evaluation.exact import block_exact_solve

    jac = fitting_gradients(model, layers, fit, "empirical", seed=0)
    queries = torch.randn(2, jac.shape[1], dtype=torch.float64)
    one = {name: layers[name] for name in list(layers)[:1]}
    size = next(iter(one.values())).d_out * next(iter(one.values())).d_in_total
    torch.testing.assert_close(
        block_exact_solve(jac[:, :size], queries[:, :size], one, 0.3),
        ExactFisher(jac[:, :size]).solve(queries[:, :size].T, 0.3).T,
    )
    blocks = block_exact_solve(jac, queries, layers, 0.3)
    dense = torch.block_diag(*[(jac[:, a:b].T @ jac[:, a:b]) / len(jac) for a, b in _slices(layers)])
    expected = torch.linalg.solve(dense + 0.3 * torch.eye(len(dense), dtype=torch.float64), queries.T).T
    torch.testing.assert_close(blocks, expected)


def _slices(layers):
    start = 0
    for layer in layers.values():
        yield start, start + layer.d_out * layer.d_in_total
        start += layer.d_out * layer.d_in_total
