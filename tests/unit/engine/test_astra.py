"""ekfac_astra against dense float64 references on a tiny model whose corpus is enumerable: 0 steps is EK-FAC, the
deterministic iteration (empirical labels, minibatch = the whole pool) converges to the exact (F_pool + λI)⁻¹ q,
and with labels drawn afresh every step it converges toward the expected Fisher (the Gauss-Newton Hessian), which
ekfac_cg's one fixed label draw does not reach."""

import pytest
import torch
from helpers import batches_of, query_batch, random_sequences, tiny_llama
from influence.engine import names
from influence.engine.api import Refinement, precondition
from influence.engine.astra import Astra, Minibatches, pool_rows
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.model import select_layers
from influence.engine.precondition import Damping
from influence.engine.refine import Refine
from influence.evaluation.exact import ExactFisher, fitting_gradients, query_gradient_matrix

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


def _exact(setup, jacobian, pre):
    """(F + λI)⁻¹ q with EK-FAC's λ (one number here: the test's layers share it only through the mean, so take
    the mean of the per-layer values and check they agree)."""
    model, layers, _, _, queries = setup
    lam = sorted(pre.damping.values())
    return ExactFisher(jacobian).solve(query_gradient_matrix(model, layers, queries).T, lam[0]).T, lam


def test_zero_steps_is_ekfac_exactly(setup):
    ekfac, x = _solve(setup, "ekfac", None)
    astra, y = _solve(setup, "ekfac_astra", Astra(steps=0))
    assert astra.estimator == "ekfac_astra" and astra.damping == pytest.approx(ekfac.damping)
    torch.testing.assert_close(y, x, rtol=0, atol=0)


def test_full_pool_iteration_converges_to_the_exact_solve(setup):
    """Empirical labels and a minibatch of the whole pool make the iteration deterministic: heavy-ball on a fixed
    quadratic, whose minimiser is the dense solve. One λ for every layer (absolute damping)."""
    model, layers, pool, _, _ = setup
    damping = Damping("absolute", 1e-2)
    _, start = _solve(setup, "ekfac_astra", Astra(steps=0), damping=damping)
    pre, x = _solve(setup, "ekfac_astra", Astra(steps=200, batch_size=64, lr=0.1, lr_decay=1.0), damping=damping)
    truth, lam = _exact(setup, fitting_gradients(model, layers, pool, "empirical", 0), pre)
    assert lam[0] == lam[-1] == pytest.approx(1e-2)
    assert (start - truth).norm() > 0.05 * truth.norm()  # EK-FAC alone is visibly off
    assert (x - truth).norm() < 1e-4 * truth.norm()


def test_fresh_labels_target_the_expected_fisher_not_one_label_draw(setup):
    """With the true Fisher, each step samples its labels afresh, so the iteration's fixed point is the solve with
    the *expected* Fisher (here: the mean of 50 label draws); ekfac_cg converges to its one draw's Fisher."""
    model, layers, pool, _, _ = setup
    damping = Damping("absolute", 1e-2)
    expected = torch.cat([fitting_gradients(model, layers, pool, "true", seed) for seed in range(50)])
    cg_pre, cg = _solve(setup, "ekfac_cg", Refine(steps=60, tolerance=1e-10), "true", damping)
    _, astra = _solve(setup, "ekfac_astra", Astra(steps=400, batch_size=64, lr=0.05, lr_decay=0.5), "true", damping)
    truth, _ = _exact(setup, expected, cg_pre)
    one_draw, _ = _exact(setup, fitting_gradients(model, layers, pool, "true", 7), cg_pre)
    torch.testing.assert_close(cg, one_draw, rtol=1e-5, atol=1e-5 * float(one_draw.abs().max()))
    cg_error, astra_error = (cg - truth).norm() / truth.norm(), (astra - truth).norm() / truth.norm()
    assert astra_error < 0.6 * cg_error, (float(astra_error), float(cg_error))  # measured 0.059 against 0.18


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


def test_a_step_size_beyond_the_curvature_bound_is_capped_and_divergence_restarts_then_stops(
    setup, monkeypatch, caplog
):
    """lr 8 is far beyond 2(1 + μ)/λ_max: the step is capped by 1/tr(P⁻¹F_B) and still reaches the exact solve; a run
    flagged as diverging restarts at half the step, and after MAX_BACKOFFS restarts stops naming the setting."""
    import influence.engine.astra as astra

    model, layers, pool, _, _ = setup
    damping = Damping("absolute", 1e-2)
    with caplog.at_level("INFO", logger="influence.engine.astra"):
        pre, x = _solve(setup, "ekfac_astra", Astra(steps=300, batch_size=64, lr=8.0, lr_decay=1.0), damping=damping)
    assert "step size" in caplog.text and "(lr 8," in caplog.text
    truth, _ = _exact(setup, fitting_gradients(model, layers, pool, "empirical", 0), pre)
    assert (x - truth).norm() < 1e-3 * truth.norm()
    monkeypatch.setattr(astra, "DIVERGED", 0.0)  # every run counts as diverged at its first step
    with pytest.raises(FloatingPointError, match="halvings of scoring.astra.lr"):
        _solve(setup, "ekfac_astra", Astra(steps=5), damping=damping)
    assert caplog.text.count("restarting from the EK-FAC solution") == astra.MAX_BACKOFFS
