"""ekfac_astra against dense float64 references on a tiny model whose corpus is enumerable: 0 steps is EK-FAC, the
deterministic iteration (minibatch = the whole pool) converges at ASTRA's step and momentum to the exact
(G_pool + λI)⁻¹ q with G the pool's Gauss-Newton Hessian (the expected true Fisher, from full logits Jacobians),
fresh minibatches of a third of the pool approach it, and the evaluation's dense reference equals the helper's."""

import pytest
import torch
from helpers import batches_of, gauss_newton, query_batch, random_sequences, tiny_llama
from influence.engine import names
from influence.engine.api import Refinement, precondition
from influence.engine.astra import Astra, Minibatches, largest_curvature, pool_rows
from influence.engine.data import pad_batch
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.ggn import GaussNewton
from influence.engine.model import select_layers
from influence.engine.precondition import Damping
from influence.engine.refine import EkfacInverse, Refine
from influence.evaluation.exact import ExactGaussNewton, query_gradient_matrix

F64 = torch.float64
IDS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def setup():
    model = tiny_llama()
    layers = select_layers(model)
    pool = batches_of(random_sequences(12, seed=3), 5)  # padded batches of unequal rows
    covariance = fit_covariance(model, layers, pool, "true", 7, F64, progress=False, max_tokens=None)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, pool, "true", 8, F64, progress=False, max_tokens=None)
    return model, layers, pool, {"eigen": eigen, "correction": correction}, [query_batch(3, seed=4)]


def _solve(setup, estimator, settings, fisher="empirical", damping=Damping("relative", 0.1), seed=7):
    model, layers, pool, curvature, queries = setup
    refinement = Refinement(pool, settings, fisher, seed) if settings is not None else None
    pre = precondition(
        model,
        layers,
        IDS,
        queries,
        estimator=estimator,
        damping=damping,
        refinement=refinement,
        dtype=F64,
        progress=False,
        **curvature,
    )
    return pre, torch.cat([pre.layers[n][names.PRECONDITIONED].flatten(1) for n in layers], 1)


def _exact(setup, damping: float) -> torch.Tensor:
    """(G_pool + λI)⁻¹ q, dense, G the pool's mean Gauss-Newton Hessian."""
    model, layers, pool, _, queries = setup
    hessian = gauss_newton(model, pool)
    rhs = query_gradient_matrix(model, layers, queries).T
    return torch.linalg.solve(hessian + damping * torch.eye(hessian.shape[0], dtype=F64), rhs).T


def _error(x, truth) -> float:
    return float((x - truth).norm() / truth.norm())


def test_zero_steps_is_ekfac_exactly(setup):
    ekfac, x = _solve(setup, "ekfac", None)
    astra, y = _solve(setup, "ekfac_astra", Astra(steps=0))
    assert astra.estimator == "ekfac_astra" and astra.damping == pytest.approx(ekfac.damping)
    torch.testing.assert_close(y, x, rtol=0, atol=0)


def test_whole_pool_steps_converge_to_the_exact_gauss_newton_solve_at_astras_step_and_momentum(setup):
    """A minibatch of the whole pool makes each step deterministic: heavy-ball on a fixed quadratic whose minimiser
    is the dense solve with the pool's Gauss-Newton Hessian. One λ for every layer (absolute damping)."""
    damping = Damping("absolute", 1e-2)
    _, start = _solve(setup, "ekfac_astra", Astra(steps=0), damping=damping)
    settings = Astra(steps=200, batch_size=64, lr_decay=1.0, momentum=0.9)  # ASTRA's η 0.1 (capped) and μ 0.9
    pre, x = _solve(setup, "ekfac_astra", settings, damping=damping)
    assert sorted(pre.damping.values()) == pytest.approx([1e-2] * len(pre.damping))
    truth = _exact(setup, 1e-2)
    assert _error(start, truth) > 0.05  # EK-FAC alone is visibly off
    assert _error(x, truth) < 1e-5, _error(x, truth)  # Llama's RMSNorm runs in float32: products agree to ~1e-8


def test_fresh_minibatches_approach_the_whole_pools_solve(setup):
    """Minibatches of 4 of the 12 sequences: each step's curvature is a noisy estimate of the pool's; with the step
    decaying the iterate ends far nearer the pool's solve than EK-FAC starts."""
    damping = Damping("absolute", 1e-2)
    truth = _exact(setup, 1e-2)
    _, start = _solve(setup, "ekfac_astra", Astra(steps=0), damping=damping)
    _, x = _solve(setup, "ekfac_astra", Astra(steps=300, batch_size=4, lr_decay=0.5), damping=damping)
    assert _error(x, truth) < 0.5 * _error(start, truth), (_error(x, truth), _error(start, truth))  # 0.028, 0.11


def test_the_evaluations_reference_is_the_dense_solve(setup):
    """ExactGaussNewton builds G from products with unit vectors (forward mode), the helper from full Jacobians."""
    model, layers, pool, _, queries = setup
    rhs = query_gradient_matrix(model, layers, queries).T
    solved = ExactGaussNewton(model, layers, pool, block=1000).solve(rhs, 1e-2).T
    assert _error(solved, _exact(setup, 1e-2)) < 1e-6


def test_minibatches_are_seeded_draws_without_replacement_and_the_whole_pool_when_small(setup):
    rows = pool_rows(setup[2])
    assert len(rows) == 12 and all(len(ids) == len(labels) for ids, labels in rows)
    draw = Minibatches(rows, 4, seed=1)
    first, again, other = draw(0), draw(0), draw(1)
    torch.testing.assert_close(first["input_ids"], again["input_ids"])
    assert first["input_ids"].shape[0] == 4 and not torch.equal(first["input_ids"], other["input_ids"][: len(first)])
    assert Minibatches(rows, 64, seed=1)(5)["input_ids"].shape[0] == 12


def test_bad_settings_and_a_missing_pool_are_named():
    with pytest.raises(ValueError, match="scoring.astra: lr"):
        Astra(lr=0)
    with pytest.raises(ValueError, match="batch_size"):
        Astra(batch_size=0)
    with pytest.raises(ValueError, match="non-empty pool"):
        Minibatches([], 16, 0)
    with pytest.raises(ValueError, match="Astra settings"):
        precondition(None, {}, ["q"], [], estimator="ekfac_astra", refinement=Refinement([], Refine()))


def test_the_step_is_capped_by_the_largest_curvature_and_divergence_restarts_then_stops(setup, monkeypatch, caplog):
    """The power-iteration estimate matches the dense λ_max of P⁻¹(G_B + λ); lr 8 is capped at 1/λ_max and still reaches
    the exact solve; a run flagged as diverging restarts at half the step, and after MAX_BACKOFFS restarts stops
    naming the setting."""
    import influence.engine.astra as astra

    model, layers, pool, curvature, _ = setup
    damping = Damping("absolute", 1e-2)
    with caplog.at_level("INFO", logger="influence.engine.astra"):
        _, x = _solve(setup, "ekfac_astra", Astra(steps=300, batch_size=64, lr=8.0, lr_decay=1.0), damping=damping)
    assert "capped at 1/λ_max" in caplog.text and "restarting" not in caplog.text
    assert _error(x, _exact(setup, 1e-2)) < 1e-4
    inverse = EkfacInverse(layers, curvature["eigen"], curvature["correction"], damping, F64)
    everything = pad_batch([ids for ids, _ in pool_rows(pool)])
    estimate = largest_curvature(GaussNewton(model, layers, None), everything, inverse, 0, iterations=60)
    ordered = torch.cat([inverse.denominators[n].flatten() for n in layers])  # P in the eigenbasis, layers' order
    rotation = torch.block_diag(*[torch.kron(inverse.rotations[n][1], inverse.rotations[n][0]) for n in layers])
    hessian = rotation.T @ gauss_newton(model, pool) @ rotation + 1e-2 * torch.eye(len(ordered), dtype=F64)
    dense = torch.linalg.eigvalsh(hessian / ordered.sqrt()[:, None] / ordered.sqrt()[None, :]).max()
    assert estimate == pytest.approx(float(dense), rel=1e-3)
    caplog.clear()
    monkeypatch.setattr(astra, "DIVERGED", 0.0)  # every run counts as diverged at its first step
    with pytest.raises(FloatingPointError, match="halvings of scoring.astra.lr"):
        _solve(setup, "ekfac_astra", Astra(steps=5), damping=damping)
    assert caplog.text.count("restarting from the EK-FAC solution") == astra.MAX_BACKOFFS
