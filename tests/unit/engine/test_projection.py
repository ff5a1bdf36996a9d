"""Random projections of the gradient index against dense float64 projections and exact scores."""

import pytest
import torch
from helpers import MODELS, autograd_gradients, batches_of, query_batch, random_sequences
from influence.engine import names
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.index import project_corpus, projected_scores, projector_for
from influence.engine.model import select_layers
from influence.engine.precondition import Damping, precondition_queries
from influence.engine.projection import ProjectionSpec, Projector
from influence.engine.scores import score_candidates

F64 = dict(dtype=torch.float64, progress=False)


@pytest.fixture(scope="module", params=["llama_bias", "gpt2"])
def setup(request):
    model = MODELS[request.param]()
    layers = select_layers(model)
    fit = batches_of(random_sequences(12, seed=20), 6)
    eigen = eigendecompose(fit_covariance(model, layers, fit, fisher="empirical", **F64), progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, fit, fisher="empirical", **F64)
    candidates = batches_of(random_sequences(7, seed=21), 3)
    grads = {}
    for batch in candidates:
        for name, g in autograd_gradients(model, batch).items():
            grads.setdefault(name, []).append(g)

    def precondition(rank):
        queries = [query_batch(3, seed=22)]
        return precondition_queries(
            model,
            layers,
            ["a", "b", "c"],
            queries,
            estimator="ekfac",
            eigen=eigen,
            correction=correction,
            damping=Damping(),
            rank=rank,
            **F64,
        )

    return dict(
        model=model,
        layers=layers,
        eigen=eigen,
        candidates=candidates,
        grads={n: torch.cat(g) for n, g in grads.items()},
        full=precondition(None),
        low=precondition(2),
    )


def _dense(projector, name, matrices, candidate=True):
    """Dense float64 projection of materialised (Q, d_out, d_in) matrices with the candidate or query side."""
    sides = (projector.out, projector.inp) if candidate else (projector.query_out, projector.query_inp)
    r_out, r_in = sides[0][name], sides[1][name]
    r_out = torch.eye(matrices.shape[1], dtype=matrices.dtype) if r_out is None else r_out
    r_in = torch.eye(matrices.shape[2], dtype=matrices.dtype) if r_in is None else r_in
    return (r_out @ matrices @ r_in.T).flatten(1)


@pytest.mark.parametrize(
    "kind, whiten", [("gaussian", False), ("rademacher", False), ("gaussian", True), ("eigen", False)]
)
def test_projected_candidates_equal_dense_projection_of_materialised_gradients(setup, kind, whiten):
    spec = ProjectionSpec(k=3, seed=5, kind=kind, whiten=whiten)
    projector = projector_for(spec, setup["layers"], torch.float64, eigen=setup["eigen"])
    vectors, norms = project_corpus(setup["model"], setup["layers"], projector, setup["candidates"], **F64)
    dense = torch.cat([_dense(projector, n, setup["grads"][n]) for n in projector.layers], dim=1)
    torch.testing.assert_close(vectors, dense, rtol=1e-10, atol=1e-12)
    exact_norms = torch.sqrt(sum(g.flatten(1).square().sum(1) for g in setup["grads"].values()))
    torch.testing.assert_close(norms, exact_norms, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind, whiten", [("gaussian", False), ("gaussian", True), ("eigen", False)])
def test_projected_queries_full_and_rank_r_equal_dense_projection(setup, kind, whiten):
    spec = ProjectionSpec(k=4, dim=10, seed=1, kind=kind, whiten=whiten)
    projector = projector_for(spec, setup["layers"], torch.float64, eigen=setup["eigen"])
    for pre in (setup["full"], setup["low"]):
        blocks = {}
        for name in projector.layers:
            parts = pre.layers[name]
            matrix = parts.get(names.PRECONDITIONED)
            if matrix is None:
                matrix = parts[names.LEFT] @ parts[names.RIGHT].transpose(1, 2)
            blocks[name] = _dense(projector, name, matrix, candidate=False) @ projector.mix[name].T
        torch.testing.assert_close(projector.queries(pre), sum(blocks.values()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rank, whiten", [(None, False), (2, False), (None, True), (2, True)])
def test_full_dimension_projection_gives_the_exact_score(setup, rank, whiten):
    """k ≥ every layer's dimension: identity projections (whitened: the whitening and its inverse transpose
    alone), and index scores equal score_candidates'."""
    pre = setup["full"] if rank is None else setup["low"]
    spec = ProjectionSpec(k=10_000, whiten=whiten)
    projector = projector_for(spec, setup["layers"], torch.float64, eigen=setup["eigen"])
    assert all((m is None) != whiten for m in [*projector.out.values(), *projector.inp.values()])
    vectors, _ = project_corpus(setup["model"], setup["layers"], projector, setup["candidates"], **F64)
    exact = score_candidates(setup["model"], setup["layers"], pre, setup["candidates"], **F64).total
    torch.testing.assert_close(vectors @ projector.queries(pre).T, exact, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("rank", [None, 2])
def test_eigen_projection_is_the_exact_score_on_the_top_eigenvector_block(setup, rank):
    """index.kind eigen: each side keeps its factor's top-k eigenvectors, and the index score equals the sum,
    over the k × k block of largest-eigenvalue cells, of query and candidate gradients in the Kronecker
    eigenbasis (float64 dense); whitening would cancel, so it is not applied; k = full is the exact score."""
    pre = setup["full"] if rank is None else setup["low"]
    k = 5
    projector = projector_for(ProjectionSpec(k=k, kind="eigen"), setup["layers"], torch.float64, eigen=setup["eigen"])
    vectors, _ = project_corpus(setup["model"], setup["layers"], projector, setup["candidates"], **F64)
    dense = 0
    for name in projector.layers:
        e = setup["eigen"][name]
        q_s, q_a = (e[key] for key in (names.GRADIENT_EIGENVECTORS, names.ACTIVATION_EIGENVECTORS))
        top_s = torch.argsort(e[names.GRADIENT_EIGENVALUES], descending=True)[:k]
        top_a = torch.argsort(e[names.ACTIVATION_EIGENVALUES], descending=True)[:k]
        parts = pre.layers[name]
        p = parts.get(names.PRECONDITIONED)
        p = parts[names.LEFT] @ parts[names.RIGHT].transpose(1, 2) if p is None else p
        rotated_q = (q_s.T @ p @ q_a)[:, top_s][:, :, top_a]  # (Q, k, k) in the eigenbasis
        rotated_z = (q_s.T @ setup["grads"][name] @ q_a)[:, top_s][:, :, top_a]  # (N, k, k)
        dense = dense + rotated_z.flatten(1) @ rotated_q.flatten(1).T
    torch.testing.assert_close(vectors @ projector.queries(pre).T, dense, rtol=1e-9, atol=1e-10)
    white_spec = ProjectionSpec(k=k, kind="eigen", whiten=True)
    assert not white_spec.whiten and white_spec.fingerprint("m", setup["eigen"]) == ProjectionSpec(
        k=k, kind="eigen").fingerprint("m", setup["eigen"])  # fmt: skip
    white = projector_for(white_spec, setup["layers"], torch.float64, eigen=setup["eigen"])
    white_vectors, _ = project_corpus(setup["model"], setup["layers"], white, setup["candidates"], **F64)
    torch.testing.assert_close(white_vectors @ white.queries(pre).T, dense, rtol=1e-9, atol=1e-10)
    full = projector_for(ProjectionSpec(k=10_000, kind="eigen"), setup["layers"], torch.float64, eigen=setup["eigen"])
    full_vectors, _ = project_corpus(setup["model"], setup["layers"], full, setup["candidates"], **F64)
    exact = score_candidates(setup["model"], setup["layers"], pre, setup["candidates"], **F64).total
    torch.testing.assert_close(full_vectors @ full.queries(pre).T, exact, rtol=1e-9, atol=1e-10)


def test_projected_scores_equal_the_stored_vectors_against_the_queries(setup):
    """projected_scores (scored layer by layer, nothing stored) = project_corpus's vectors @ queriesᵀ, for several
    projectors in one pass: plain, whitened, and with a D projection."""
    specs = [ProjectionSpec(k=3, seed=2), ProjectionSpec(k=3, seed=2, whiten=True), ProjectionSpec(k=4, dim=7)]
    projectors = [projector_for(s, setup["layers"], torch.float64, eigen=setup["eigen"]) for s in specs]
    queries = [p.queries(setup["low"]) for p in projectors]
    scores = projected_scores(setup["model"], setup["layers"], projectors, queries, setup["candidates"], **F64)
    for projector, query, score in zip(projectors, queries, scores):
        vectors, _ = project_corpus(setup["model"], setup["layers"], projector, setup["candidates"], **F64)
        torch.testing.assert_close(score, vectors @ query.T, rtol=1e-10, atol=1e-12)


def _random_eigen(gen, sizes: dict[str, int]) -> dict:
    """Eigendecompositions of random SPD matrices with a wide spectrum, as a factor fit would give."""
    out = {}
    for key, d in sizes.items():
        x = torch.randn(d, 3 * d, generator=gen, dtype=torch.float64) * torch.logspace(0, -3, 3 * d)
        values, vectors = torch.linalg.eigh(x @ x.T)
        out[f"{key}_eigenvalues"], out[f"{key}_eigenvectors"] = values, vectors
    return out


@pytest.mark.parametrize(
    "spec",
    [dict(kind="gaussian"), dict(kind="rademacher"), dict(kind="gaussian", dim=3), dict(kind="gaussian", whiten=True)],
)
def test_projected_inner_product_is_unbiased_over_seeds(spec):
    gen = torch.Generator().manual_seed(0)
    p, g = torch.randn(2, 1, 6, 5, generator=gen, dtype=torch.float64)
    eigen = {"w": _random_eigen(gen, {"gradient": 6, "activation": 5})}
    assert set(eigen["w"]) == {
        names.GRADIENT_EIGENVALUES, names.GRADIENT_EIGENVECTORS, names.ACTIVATION_EIGENVALUES,
        names.ACTIVATION_EIGENVECTORS,
    }  # fmt: skip
    exact = float((p * g).sum())
    values = []
    for seed in range(3000):
        projector = Projector(ProjectionSpec(k=2, seed=seed, **spec), {"w": (6, 5)}, torch.float64, eigen=eigen)
        q = projector.combine({"w": projector.matrices("w", p)})
        z = projector.combine({"w": projector.matrices("w", g, candidate=True)})
        values.append(float(q @ z.T))
    values = torch.tensor(values)
    stderr = float(values.std() / len(values) ** 0.5)
    assert abs(float(values.mean()) - exact) < 4 * stderr, (float(values.mean()), exact, stderr)
    assert float(values.std()) > 0.1 * abs(exact)  # the projection really is random


def test_whitening_cuts_the_sketch_noise_of_a_preconditioned_query():
    """The case the index meets: a query preconditioned by the inverse curvature (weight on low-curvature
    directions) against a gradient drawn from the curvature (weight on high-curvature ones). Both sketches
    are unbiased; whitening's spread over seeds is several times smaller."""
    gen = torch.Generator().manual_seed(1)
    d_out, d_in = 12, 10
    eigen = {"w": _random_eigen(gen, {"gradient": d_out, "activation": d_in})}
    e = eigen["w"]
    sqrt_s = e[names.GRADIENT_EIGENVECTORS] * e[names.GRADIENT_EIGENVALUES].sqrt()
    sqrt_a = e[names.ACTIVATION_EIGENVECTORS] * e[names.ACTIVATION_EIGENVALUES].sqrt()
    g = sqrt_s @ torch.randn(d_out, d_in, generator=gen, dtype=torch.float64) @ sqrt_a.T  # ~ the curvature
    grad_q = sqrt_s @ torch.randn(d_out, d_in, generator=gen, dtype=torch.float64) @ sqrt_a.T
    inv_s = e[names.GRADIENT_EIGENVECTORS] @ torch.diag(1 / (e[names.GRADIENT_EIGENVALUES] + 1e-3)) @ e[
        names.GRADIENT_EIGENVECTORS].T  # fmt: skip
    inv_a = e[names.ACTIVATION_EIGENVECTORS] @ torch.diag(1 / (e[names.ACTIVATION_EIGENVALUES] + 1e-3)) @ e[
        names.ACTIVATION_EIGENVECTORS].T  # fmt: skip
    p = inv_s @ grad_q @ inv_a  # K-FAC-preconditioned query
    spread = {}
    for whiten in (False, True):
        values = []
        for seed in range(400):
            projector = Projector(ProjectionSpec(k=4, seed=seed, whiten=whiten), {"w": (d_out, d_in)}, torch.float64,
                                  eigen=eigen)  # fmt: skip
            q, z = projector.matrices("w", p[None]), projector.matrices("w", g[None], candidate=True)
            values.append(float(q @ z.T))
        spread[whiten] = float(torch.tensor(values).std())
    assert spread[True] < spread[False] / 3, spread


def test_matrices_are_seeded_per_layer_name_not_order():
    a = Projector(ProjectionSpec(k=2, seed=3), {"x": (6, 5), "y": (4, 4)})
    with pytest.raises(ValueError, match="no eigendecomposition"):
        Projector(ProjectionSpec(k=2, seed=3, whiten=True), {"x": (6, 5)})
    with pytest.raises(ValueError, match="eigendecomposition lacks the indexed layers \\['y'\\]"):
        Projector(ProjectionSpec(k=2, whiten=True), {"y": (4, 4)}, eigen={"x": {}})
    b = Projector(ProjectionSpec(k=2, seed=3), {"y": (4, 4)})
    c = Projector(ProjectionSpec(k=2, seed=4), {"y": (4, 4)})
    assert torch.equal(a.out["y"], b.out["y"]) and not torch.equal(b.out["y"], c.out["y"])
    with pytest.raises(ValueError, match="kind"):
        ProjectionSpec(kind="sparse")
    with pytest.raises(ValueError, match="index.kind is eigen but no eigendecomposition"):
        Projector(ProjectionSpec(k=2, kind="eigen"), {"x": (6, 5)})
