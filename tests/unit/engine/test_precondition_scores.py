"""Preconditioning against dense Kronecker solves, and scores against dense dot products."""

import pytest
import torch
from helpers import MODELS, autograd_gradients, batches_of, query_batch, random_sequences, solve
from influence.engine import names
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.model import select_layers
from influence.engine.precondition import Damping, precondition_queries
from influence.engine.scores import score_candidates, score_many, token_scores

F64 = dict(dtype=torch.float64, progress=False)


@pytest.fixture(scope="module", params=sorted(MODELS))
def setup(request):
    """A tiny model with fitted factors, 3 queries and 9 padded candidates."""
    model = MODELS[request.param]()
    layers = select_layers(model)
    fit = batches_of(random_sequences(16, seed=10), 6)
    covariance = fit_covariance(model, layers, fit, fisher="empirical", **F64)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, fit, fisher="empirical", **F64)
    queries = query_batch(3, seed=11)
    candidates = batches_of(random_sequences(9, seed=12), 4)
    return dict(
        model=model,
        layers=layers,
        covariance=covariance,
        eigen=eigen,
        correction=correction,
        queries=queries,
        candidates=candidates,
        query_grads=autograd_gradients(model, queries),
        candidate_grads={n: torch.cat(g) for n, g in _per_batch_grads(model, candidates).items()},
    )


def _per_batch_grads(model, batches):
    out = {}
    for batch in batches:
        for name, grads in autograd_gradients(model, batch).items():
            out.setdefault(name, []).append(grads)
    return out


def _precondition(s, estimator, rank=None, damping=Damping()):
    return precondition_queries(
        s["model"],
        s["layers"],
        ["q0", "q1", "q2"],
        [s["queries"]],
        estimator=estimator,
        eigen=s["eigen"],
        correction=s["correction"],
        damping=damping,
        rank=rank,
        **F64,
    )


def test_ekfac_ihvp_equals_dense_solve(setup):
    pre = _precondition(setup, "ekfac")
    for name, grads in setup["query_grads"].items():
        eig = setup["eigen"][name]
        basis = torch.kron(eig[names.GRADIENT_EIGENVECTORS], eig[names.ACTIVATION_EIGENVECTORS])
        lam = setup["correction"].mean(name, names.EIGENVALUE_CORRECTION)
        damping = 0.1 * lam.mean()
        assert pre.damping[name] == pytest.approx(float(damping))
        dense = basis @ torch.diag(lam.flatten()) @ basis.T
        torch.testing.assert_close(
            pre.layers[name][names.PRECONDITIONED], solve(dense, damping, grads), rtol=1e-8, atol=1e-10
        )


def test_kfac_ihvp_equals_dense_kronecker_solve(setup):
    pre = _precondition(setup, "kfac", damping=Damping("absolute", 0.03))
    cov = setup["covariance"]
    per_sequence = cov.n_tokens / cov.n_sequences
    for name, grads in setup["query_grads"].items():
        dense = per_sequence * torch.kron(
            cov.mean(name, names.GRADIENT_COVARIANCE), cov.mean(name, names.ACTIVATION_COVARIANCE)
        )
        torch.testing.assert_close(
            pre.layers[name][names.PRECONDITIONED], solve(dense, 0.03, grads), rtol=1e-7, atol=1e-10
        )


def test_ekfac_scores_equal_dense_influence_per_layer(setup):
    pre = _precondition(setup, "ekfac")
    scores = score_candidates(setup["model"], setup["layers"], pre, setup["candidates"], **F64)
    for column, name in enumerate(scores.layers):
        expected = setup["candidate_grads"][name].flatten(1) @ pre.layers[name][names.PRECONDITIONED].flatten(1).T
        torch.testing.assert_close(scores.per_layer[:, :, column], expected, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(scores.total, scores.per_layer.sum(-1))


def test_identity_scores_are_gradient_dot_products(setup):
    pre = _precondition(setup, "identity")
    scores = score_candidates(setup["model"], setup["layers"], pre, setup["candidates"], **F64)
    expected = sum(setup["candidate_grads"][n].flatten(1) @ g.flatten(1).T for n, g in setup["query_grads"].items())
    torch.testing.assert_close(scores.total, expected, rtol=1e-9, atol=1e-10)


def test_cosine_scores_are_gradient_cosines(setup):
    pre = _precondition(setup, "cosine")
    scores = score_candidates(setup["model"], setup["layers"], pre, setup["candidates"], **F64)
    flat_q = torch.cat([g.flatten(1) for g in setup["query_grads"].values()], 1)
    flat_z = torch.cat([setup["candidate_grads"][n].flatten(1) for n in setup["query_grads"]], 1)
    expected = torch.nn.functional.normalize(flat_z, dim=1) @ torch.nn.functional.normalize(flat_q, dim=1).T
    torch.testing.assert_close(scores.total, expected, rtol=1e-9, atol=1e-10)
    assert scores.total.abs().max() <= 1 + 1e-9


def test_unit_normalised_ekfac_scores_equal_dense_metric_cosines(setup, tmp_path):
    """ekfac_cosine = ⟨H⁻¹q, g⟩ / (‖H^{-1/2}q‖ ‖H^{-1/2}g‖) with H the dense damped EK-FAC matrix (block-diagonal over
    layers), through a save/load of the preconditioned artefact (the candidates' metric travels with it)."""
    from influence.engine import artefacts

    pre = _precondition(setup, "ekfac_cosine")
    path = tmp_path / "pre.safetensors"
    artefacts.save_preconditioned(path, pre, "fp", {})
    scores = score_candidates(
        setup["model"], setup["layers"], artefacts.load_preconditioned(path), setup["candidates"], **F64
    )
    inverse_q, inverse_z, flat_q, flat_z = [], [], [], []
    for name, grads in setup["query_grads"].items():
        eig = setup["eigen"][name]
        basis = torch.kron(eig[names.GRADIENT_EIGENVECTORS], eig[names.ACTIVATION_EIGENVECTORS])
        lam = setup["correction"].mean(name, names.EIGENVALUE_CORRECTION)
        dense = basis @ torch.diag(lam.flatten()) @ basis.T
        candidates = setup["candidate_grads"][name]
        inverse_q.append(solve(dense, 0.1 * lam.mean(), grads).flatten(1))
        inverse_z.append(solve(dense, 0.1 * lam.mean(), candidates).flatten(1))
        flat_q.append(grads.flatten(1))
        flat_z.append(candidates.flatten(1))
    inverse_q, inverse_z, flat_q, flat_z = (torch.cat(x, 1) for x in (inverse_q, inverse_z, flat_q, flat_z))
    q_norm = (inverse_q * flat_q).sum(1).sqrt()  # ‖H^{-1/2} q‖
    z_norm = (inverse_z * flat_z).sum(1).sqrt()
    expected = (flat_z @ inverse_q.T) / z_norm[:, None] / q_norm[None, :]
    torch.testing.assert_close(scores.total, expected, rtol=1e-8, atol=1e-10)
    assert scores.total.abs().max() <= 1 + 1e-9  # a cosine in the metric
    plain = score_candidates(setup["model"], setup["layers"], _precondition(setup, "ekfac"), setup["candidates"], **F64)
    assert not torch.allclose(plain.total, scores.total)
    with pytest.raises(ValueError, match="metric"):
        pre.metric.clear()
        score_candidates(setup["model"], setup["layers"], pre, setup["candidates"], **F64)


@pytest.mark.parametrize("estimator,rank", [("ekfac", None), ("ekfac", 2), ("kfac", None), ("cosine", 3)])
def test_token_scores_sum_to_sequence_scores(setup, estimator, rank):
    pre = _precondition(setup, estimator, rank)
    total = score_candidates(setup["model"], setup["layers"], pre, setup["candidates"], **F64).total
    per_token = token_scores(setup["model"], setup["layers"], pre, setup["candidates"], **F64)
    torch.testing.assert_close(torch.stack([t.sum(0) for t in per_token]), total, rtol=1e-9, atol=1e-10)
    lengths = torch.cat([b["attention_mask"].sum(1) for b in setup["candidates"]])
    for tokens, length in zip(per_token, lengths):  # padding carries no influence
        assert torch.all(tokens[length:] == 0)


def test_rank_r_scores_converge_to_full_rank(setup):
    full = score_candidates(
        setup["model"], setup["layers"], _precondition(setup, "ekfac"), setup["candidates"], **F64
    ).total
    errors = []
    for rank in (1, 2, 4, 8, 16, 17):
        pre = _precondition(setup, "ekfac", rank)
        approx = score_candidates(setup["model"], setup["layers"], pre, setup["candidates"], **F64).total
        errors.append(float((approx - full).norm() / full.norm()))
    assert errors[-1] < 1e-10, errors  # 17 ≥ every layer's smaller side: exact
    assert errors[0] > 1e-3 and all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])), errors


def test_one_pass_over_many_variants_equals_separate_passes(setup):
    variants = {
        "ekfac": _precondition(setup, "ekfac"),
        "ekfac_r2": _precondition(setup, "ekfac", 2),
        "kfac": _precondition(setup, "kfac"),
        "identity": _precondition(setup, "identity"),
        "cosine": _precondition(setup, "cosine"),
    }
    together = score_many(setup["model"], setup["layers"], variants, setup["candidates"], **F64)
    for label, pre in variants.items():
        alone = score_candidates(setup["model"], setup["layers"], pre, setup["candidates"], **F64)
        torch.testing.assert_close(together[label].per_layer, alone.per_layer, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(together["ekfac"].total, together["identity"].total)


def test_estimators_need_their_inputs(setup):
    with pytest.raises(ValueError, match="eigenvalue correction"):
        precondition_queries(
            setup["model"], setup["layers"], ["q"], [setup["queries"]], estimator="ekfac", eigen=None, correction=None
        )
    with pytest.raises(ValueError, match="estimator must be one of"):
        precondition_queries(setup["model"], setup["layers"], ["q"], [setup["queries"]], estimator="tracin")
    with pytest.raises(ValueError, match="damping value"):
        Damping("relative", 0.0)


def test_kfac_needs_no_eigenvalue_correction(setup):
    with_lambda = _precondition(setup, "kfac")
    cov = setup["covariance"]
    alone = precondition_queries(
        setup["model"],
        setup["layers"],
        ["q0", "q1", "q2"],
        [setup["queries"]],
        estimator="kfac",
        eigen=setup["eigen"],
        correction=None,
        dtype=torch.float64,
        progress=False,
        tokens_per_sequence=cov.n_tokens / cov.n_sequences,
    )
    for name, factors in with_lambda.layers.items():
        torch.testing.assert_close(alone.layers[name][names.PRECONDITIONED], factors[names.PRECONDITIONED])
    with pytest.raises(ValueError, match="tokens_per_sequence"):
        precondition_queries(
            setup["model"],
            setup["layers"],
            ["q"],
            [setup["queries"]],
            estimator="kfac",
            eigen=setup["eigen"],
            correction=None,
        )


def test_float32_eigendecomposition_runs_in_float32_and_scores_agree(setup):
    """fitting.eigen_dtype float32: the eigh really runs in float32 (its eigenvalues differ from float64's at
    float32's precision), and the EK-FAC scores fitted on it agree with float64's to that precision."""
    s = setup
    eigen32 = eigendecompose(s["covariance"], progress=False, dtype="float32")
    for name in s["eigen"]:
        for values in (names.ACTIVATION_EIGENVALUES, names.GRADIENT_EIGENVALUES):
            exact, single = s["eigen"][name][values], eigen32[name][values]
            assert single.dtype == torch.float64  # returned in the sums' dtype
            error = float((single - exact).abs().max() / exact.abs().max())
            assert 0 < error < 1e-5, (name, values, error)
    correction32 = fit_eigenvalue_correction(
        s["model"], s["layers"], eigen32, batches_of(random_sequences(16, seed=10), 6), fisher="empirical", **F64
    )
    single = {**s, "eigen": eigen32, "correction": correction32}
    full, approx = (
        score_candidates(t["model"], t["layers"], _precondition(t, "ekfac"), t["candidates"], **F64).total
        for t in (s, single)
    )
    assert float((approx - full).norm() / full.norm()) < 1e-4
