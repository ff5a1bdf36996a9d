"""The exact Gauss-Newton product (ekfac_astra's curvature) against a dense float64 Gauss-Newton Hessian built
from each sequence's full logits Jacobian, on the three tiny models (biases and GPT-2's Conv1D included)."""

import pytest
import torch
from helpers import MODELS, batches_of, gauss_newton, random_sequences
from influence.engine.ggn import GaussNewton
from influence.engine.model import select_layers


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_product_equals_the_dense_gauss_newton_hessian_for_every_vector(kind):
    model = MODELS[kind]()
    layers = select_layers(model)
    batch = batches_of(random_sequences(5, seed=1), 5)[0]  # right padding: padded positions must not count
    batch["labels"][0, :3] = -100  # a prompt: positions predicting unlabelled tokens must not count either
    vectors = {n: torch.randn(3, layer.d_out, layer.d_in_total, dtype=torch.float64) for n, layer in layers.items()}
    dense = gauss_newton(model, [batch]) * 5  # the product sums over the batch's sequences
    expected = torch.cat([vectors[n].flatten(1) for n in layers], 1) @ dense
    for max_tokens in (None, 12):  # micro-batched: the same sum
        product = GaussNewton(model, layers, max_tokens)(batch, vectors)
        got = torch.cat([product[n].flatten(1) for n in layers], 1)
        # Llama's RMSNorm computes in float32 whatever the model's dtype, so both sides agree to ~1e-8 there
        tolerance = 1e-12 if kind == "gpt2" else 1e-6
        assert float((got - expected).norm() / expected.norm()) < tolerance


def test_an_attention_kernel_without_forward_mode_is_named():
    model = MODELS["llama"]()
    model.config._attn_implementation = "flex_attention"  # no forward-AD formula (nor a CPU kernel)
    layers = select_layers(model)
    batch = batches_of(random_sequences(2, seed=1), 2)[0]
    vectors = {n: torch.zeros(1, layer.d_out, layer.d_in_total, dtype=torch.float64) for n, layer in layers.items()}
    with pytest.raises(RuntimeError, match="attention implementation .flex_attention.*attn_implementation"):
        GaussNewton(model, layers)(batch, vectors)
