"""ekfac_cg: CG against dense float64 solves, the Fisher-vector product against autograd, and the estimator
against EK-FAC (0 steps) and the exact damped-Fisher influence (many steps) on a tiny model."""

import pytest
import torch
from helpers import autograd_gradients, batches_of, query_batch, random_sequences, tiny_llama
from influence.engine import names
from influence.engine.cg import CurvatureError, conjugate_gradients
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.model import select_layers
from influence.engine.precondition import Damping, precondition_queries
from influence.engine.refine import DampedFisher, Refine, refine_queries
from influence.engine.refinement_set import RefinementSet
from influence.evaluation.exact import ExactFisher, fitting_gradients, query_gradient_matrix

F64 = torch.float64


def _toy(n=30, p=12, q=3, seed=0):
    """A low-rank-plus-spread Fisher, a block-structured approximation of it and Q right-hand sides."""
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(n, p, dtype=F64, generator=gen) * torch.logspace(0, -2, p, dtype=F64)
    fisher = jac.T @ jac / n
    rhs = torch.randn(q, p, 1, dtype=F64, generator=gen)
    return fisher, rhs


def _dense_ops(matrix, approx):
    def apply_a(v):
        return {"w": (v["w"][..., 0] @ matrix.T)[..., None]}

    inverse = torch.linalg.inv(approx)

    def apply_m(v):
        return {"w": (v["w"][..., 0] @ inverse.T)[..., None]}

    return apply_a, apply_m


def test_cg_equals_a_dense_solve_and_the_preconditioner_saves_steps():
    fisher, rhs = _toy()
    damped = fisher + 1e-3 * torch.eye(12, dtype=F64)
    expected = torch.linalg.solve(damped, rhs[..., 0].T).T
    apply_a, identity = _dense_ops(damped, torch.eye(12, dtype=F64))
    # a preconditioner that knows the diagonal (what EK-FAC knows in its eigenbasis), not the couplings
    _, diagonal = _dense_ops(damped, torch.diag(torch.diag(damped)))
    runs = {}
    for name, apply_m in (("plain", identity), ("diagonal", diagonal)):
        x0 = apply_m({"w": rhs})
        x, history = conjugate_gradients(apply_a, apply_m, {"w": rhs}, x0, 100, 1e-10)
        torch.testing.assert_close(x["w"][..., 0], expected, rtol=1e-7, atol=1e-9)
        runs[name] = len(history) - 1
    assert runs["diagonal"] < runs["plain"], runs


def test_batched_right_hand_sides_equal_separate_solves():
    fisher, rhs = _toy(q=4)
    damped = fisher + 1e-2 * torch.eye(12, dtype=F64)
    apply_a, apply_m = _dense_ops(damped, torch.diag(torch.diag(damped)))
    together, history = conjugate_gradients(apply_a, apply_m, {"w": rhs}, apply_m({"w": rhs}), 6, 0.0)
    assert history[0].shape == (4, 1)
    for q in range(4):  # 6 steps, not converged: the iterates themselves must agree
        one = {"w": rhs[q : q + 1]}
        alone, _ = conjugate_gradients(apply_a, apply_m, one, apply_m(one), 6, 0.0)
        torch.testing.assert_close(together["w"][q], alone["w"][0], rtol=1e-10, atol=1e-12)


def test_bad_curvature_and_non_finite_residuals_name_the_layer_and_step():
    fisher, rhs = _toy()
    b = {"good": rhs, "bad": rhs.clone()}

    def negative(v):  # F + λI on "good", a negative-definite block on "bad"
        return {
            "good": (v["good"][..., 0] @ (fisher + 0.1 * torch.eye(12, dtype=F64)))[..., None],
            "bad": -10 * v["bad"],
        }

    def identity(v):
        return {name: t.clone() for name, t in v.items()}

    with pytest.raises(CurvatureError, match=r"step 1: pᵀ\(F\+λI\)p .* layer 'bad'"):
        conjugate_gradients(negative, identity, b, identity(b), 5, 1e-8)

    def poisoned(v):
        out = negative(v)
        out["bad"] = torch.full_like(v["bad"], float("nan"))
        return out

    with pytest.raises(CurvatureError, match="step 0: the residual of layer 'bad' has NaN"):
        conjugate_gradients(poisoned, identity, b, identity(b), 5, 1e-8)


@pytest.fixture(scope="module")
def tiny():
    model = tiny_llama()
    layers = select_layers(model)
    fit = batches_of(random_sequences(10, seed=3), 4)  # rows of different lengths: padding
    return model, layers, fit


@pytest.mark.parametrize("fisher", ["true", "empirical"])
def test_fisher_product_equals_the_dense_fisher(tiny, fisher):
    """From cached G, cached a and g, and a model re-run, full and block-diagonal, with padded batches."""
    model, layers, fit = tiny
    assert RefinementSet(model, layers, fit, fisher, 7, F64, 0, None, progress=False).mode == "recompute"
    assert RefinementSet(model, layers, fit, fisher, 7, F64, 2**30, None, progress=False).mode == "gradients"
    jac = fitting_gradients(model, layers, fit, fisher, 7)  # (N, P): the exact reference's Fisher
    if fisher == "empirical":  # and against one autograd backward per sequence, padding stripped
        dense = autograd_gradients(model, _cat(fit))
        torch.testing.assert_close(jac, torch.cat([dense[n].flatten(1) for n in layers], 1))
    v = torch.randn(2, jac.shape[1], dtype=F64, generator=torch.Generator().manual_seed(1))
    fisher_matrix = jac.T @ jac / len(jac)
    mask = torch.block_diag(*[torch.ones(s, s, dtype=F64) for s in _sizes(layers)])
    eye = 0.5 * torch.eye(len(fisher_matrix), dtype=F64)
    for mode in ("gradients", "activations", "recompute"):
        refinement = RefinementSet(model, layers, fit, fisher, 7, F64, 2**30, None, mode, progress=False)
        for block in (False, True):
            groups = {n: i for i, n in enumerate(layers)} if block else dict.fromkeys(layers, 0)
            product = DampedFisher(refinement, dict.fromkeys(layers, 0.5), groups)(_split(v, layers))
            expected = v @ ((fisher_matrix * mask if block else fisher_matrix) + eye)
            torch.testing.assert_close(_join(product, layers), expected)


@pytest.fixture(scope="module")
def factors(tiny):
    model, layers, fit = tiny
    covariance = fit_covariance(model, layers, fit, "true", 7, F64, progress=False, max_tokens=None)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, fit, "true", 7, F64, progress=False, max_tokens=None)
    return eigen, correction


def test_zero_steps_is_ekfac_and_many_steps_the_exact_influence(tiny, factors):
    model, layers, fit = tiny
    eigen, correction = factors
    queries = [query_batch(3, seed=4)]
    damping = Damping("absolute", 1e-3)
    ekfac = precondition_queries(
        model,
        layers,
        ["a", "b", "c"],
        queries,
        estimator="ekfac",
        eigen=eigen,
        correction=correction,
        damping=damping,
        dtype=F64,
        progress=False,
    )

    def refined(steps, rank=None, preconditioner="ekfac"):
        settings = Refine(steps=steps, tolerance=1e-9, preconditioner=preconditioner)
        return refine_queries(
            model,
            layers,
            ["a", "b", "c"],
            queries,
            fit,
            eigen,
            correction,
            damping,
            settings,
            "true",
            7,
            rank,
            F64,
            None,
            progress=False,
        )

    zero = refined(0)
    assert zero.estimator == "ekfac_cg" and zero.damping == pytest.approx(ekfac.damping)
    for name in layers:
        torch.testing.assert_close(zero.layers[name][names.PRECONDITIONED], ekfac.layers[name][names.PRECONDITIONED])
    exact = ExactFisher(fitting_gradients(model, layers, fit, "true", 7))
    truth = exact.solve(query_gradient_matrix(model, layers, queries).T, 1e-3).T  # (Q, P)
    many = _join({n: f[names.PRECONDITIONED] for n, f in refined(200).layers.items()}, layers)
    start = _join({n: f[names.PRECONDITIONED] for n, f in zero.layers.items()}, layers)
    assert (start - truth).norm() > 0.05 * truth.norm()  # EK-FAC alone is visibly off
    torch.testing.assert_close(many, truth, rtol=1e-6, atol=1e-6 * float(truth.abs().max()))
    plain = _join({n: f[names.PRECONDITIONED] for n, f in refined(200, preconditioner="none").layers.items()}, layers)
    torch.testing.assert_close(plain, truth, rtol=1e-6, atol=1e-6 * float(truth.abs().max()))
    low = refined(3, rank=2)
    assert low.is_low_rank(next(iter(layers))) and low.layers[next(iter(layers))][names.LEFT].shape[-1] == 2


def _cat(batches):
    width = max(b["input_ids"].shape[1] for b in batches)
    pads = {"input_ids": 0, "attention_mask": 0, "labels": -100}
    return {
        k: torch.cat([torch.nn.functional.pad(b[k], (0, width - b[k].shape[1]), value=v) for b in batches])
        for k, v in pads.items()
    }


def _sizes(layers):
    return [layer.d_out * layer.d_in_total for layer in layers.values()]


def _split(flat, layers):
    parts = torch.split(flat, _sizes(layers), dim=1)
    return {n: p.reshape(len(flat), lay.d_out, lay.d_in_total) for (n, lay), p in zip(layers.items(), parts)}


def _join(vector, layers):
    return torch.cat([vector[n].flatten(1) for n in layers], dim=1)


def test_the_one_pass_preconditioner_refuses_ekfac_cg():
    with pytest.raises(ValueError, match="refine_queries"):
        precondition_queries(None, {}, ["q"], [], estimator="ekfac_cg")
