"""PEFT (LoRA) adapters: loaded unmerged on a prepared checkpoint, their modules tracked, scores exact."""

import shutil

import pytest
import torch
from helpers import autograd_gradients, batches_of, query_batch, random_sequences, solve, tiny_llama
from influence.engine import names
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.model import ADAPTER_DIR, LORA_LAYER_PATTERN, load_model, select_layers
from influence.engine.precondition import precondition_queries
from influence.engine.scores import score_candidates

F64 = dict(dtype=torch.float64, progress=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared checkpoint as prepare_model leaves it: the base's weights, the adapter beside them."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("lora")
    base = tiny_llama()
    base.save_pretrained(root / "model")
    # init_lora_weights=False: B is random too (PEFT's default B = 0 would make every lora_A gradient zero)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["up_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(tiny_llama(), config).save_pretrained(root / "adapter")
    shutil.copytree(root / "adapter", root / "model" / ADAPTER_DIR)
    return root / "model"


def test_the_adapter_is_loaded_unmerged_and_its_modules_are_the_tracked_layers(prepared):
    model = load_model(prepared, "float64", "cpu")
    layers = select_layers(model, LORA_LAYER_PATTERN)
    assert len(layers) == 8 and all(".lora_A." in n or ".lora_B." in n for n in layers)  # 2 blocks × 2 targets × A, B
    shapes = {n.rsplit(".", 3)[-3] + "." + n.rsplit(".", 2)[-2]: (t.d_out, t.d_in) for n, t in layers.items()}
    assert shapes["up_proj.lora_A"] == (2, 16) and shapes["down_proj.lora_B"] == (16, 2)
    batch = batches_of(random_sequences(2, seed=3), 2)[0]
    base_logits = tiny_llama()(input_ids=batch["input_ids"]).logits
    assert not torch.allclose(model(input_ids=batch["input_ids"]).logits, base_logits)  # the adapter acts


def test_the_default_pattern_on_an_adapted_model_names_the_lora_pattern(prepared):
    model = load_model(prepared, "float64", "cpu")
    with pytest.raises(ValueError, match=r"PEFT adapter's wrapper.*lora_\(A\|B\)"):
        select_layers(model)  # it would otherwise track gate_proj alone and drop the wrapped up/down_proj
    assert len(select_layers(model, r"mlp\.(up|down)_proj\.base_layer$")) == 4


def test_lora_ekfac_scores_equal_a_dense_float64_computation_over_the_adapter_parameters(prepared):
    model = load_model(prepared, "float64", "cpu")
    layers = select_layers(model, LORA_LAYER_PATTERN)
    fit = batches_of(random_sequences(16, seed=10), 6)
    covariance = fit_covariance(model, layers, fit, fisher="empirical", **F64)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, fit, fisher="empirical", **F64)
    queries, candidates = query_batch(3, seed=11), batches_of(random_sequences(5, seed=12), 5)
    pre = precondition_queries(
        model, layers, ["q0", "q1", "q2"], [queries], estimator="ekfac", eigen=eigen, correction=correction, **F64
    )
    scores = score_candidates(model, layers, pre, candidates, **F64)
    # dense: each adapter matrix's per-sequence gradient by autograd, EK-FAC as an explicit (P, P) matrix
    query_grads = autograd_gradients(model, queries, pattern=LORA_LAYER_PATTERN)
    candidate_grads = autograd_gradients(model, candidates[0], pattern=LORA_LAYER_PATTERN)
    expected = 0
    for name in layers:
        basis = torch.kron(eigen[name][names.GRADIENT_EIGENVECTORS], eigen[name][names.ACTIVATION_EIGENVECTORS])
        lam = correction.mean(name, names.EIGENVALUE_CORRECTION)
        dense = basis @ torch.diag(lam.flatten()) @ basis.T
        preconditioned = solve(dense, 0.1 * lam.mean(), query_grads[name])
        expected = expected + candidate_grads[name].flatten(1) @ preconditioned.flatten(1).T  # (N, Q)
        assert candidate_grads[name].abs().max() > 0
    torch.testing.assert_close(scores.total, expected, rtol=1e-8, atol=1e-10)
