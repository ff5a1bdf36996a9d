"""Parity with the reference implementation kronfluence 1.0.1 on identical workloads.

Both sides: EK-FAC, empirical Fisher (no sampling noise), the same fitting,
candidate and query batches, damping 0.1 × mean(Λ) per layer, float64.
Conventions that coincide, so no conversion is needed:
- A and S are divided by the count of non-padding tokens (the last real token
  included), Λ by the count of sequences; the bias is an extra input column;
- losses are summed over tokens, the query measurement is the completion's
  cross-entropy, and kronfluence's score g_qᵀ(F + λI)⁻¹g_z has no minus sign,
  so it equals our influence (positive = the candidate makes the completion
  more likely).
- kronfluence tracks only nn.Linear: for GPT-2 its copy of the model has each
  Conv1D swapped for the equivalent Linear (transposed weight); ours keeps Conv1D.
"""

import pytest
import torch
from helpers import MODELS, batches_of, query_batch, random_sequences
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.model import select_layers
from influence.engine.precondition import precondition_queries
from influence.engine.scores import score_candidates
from scipy.stats import spearmanr

from benchmarks.kronfluence_adapter import run_kronfluence

F64 = dict(dtype=torch.float64, progress=False)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_ekfac_scores_match_kronfluence(name, tmp_path):
    model = MODELS[name](seed=3)
    layers = select_layers(model)
    fit = batches_of(random_sequences(24, seed=20, low=6, high=16), 8)
    candidates = batches_of(random_sequences(20, seed=21, low=6, high=16), 5)
    queries = [query_batch(4, seed=22)]

    covariance = fit_covariance(model, layers, fit, fisher="empirical", **F64)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, fit, fisher="empirical", **F64)
    pre = precondition_queries(
        model, layers, list("abcd"), queries, estimator="ekfac", eigen=eigen, correction=correction, **F64
    )
    ours = score_candidates(model, layers, pre, candidates, **F64).total.T  # (Q, N)

    reference = run_kronfluence(
        model,
        list(layers),
        fit,
        candidates,
        queries,
        empirical_fisher=True,
        damping=None,
        dtype=torch.float64,
        output_dir=str(tmp_path),
    )
    theirs = reference.scores
    assert theirs.shape == ours.shape and theirs.abs().max() > 0
    for q in range(ours.shape[0]):
        rel = float((ours[q] - theirs[q]).norm() / theirs[q].norm())
        rho = spearmanr(ours[q].numpy(), theirs[q].numpy()).statistic
        print(f"{name} query {q}: relative L2 {rel:.2e}, Spearman {rho:.6f}")
        assert rel <= 1e-3 and rho >= 0.999, (q, rel, rho)
    if reference.lambda_damping:
        for module, value in reference.lambda_damping.items():
            assert pre.damping[module] == pytest.approx(value, rel=1e-6)
