"""Per-sequence gradients recovered from the hooks equal autograd's, per example."""

import pytest
import torch
from helpers import MODELS, autograd_gradients, batches_of, query_batch, random_sequences
from influence.engine.hooks import per_sequence_gradients
from influence.engine.model import select_layers


def test_hook_gradients_equal_autograd(model_name):
    model = MODELS[model_name]()
    batch = batches_of(random_sequences(5, seed=1), 5)[0]
    assert (batch["attention_mask"] == 0).any(), "the batch must carry padding"
    hooks = per_sequence_gradients(model, select_layers(model), batch)
    reference = autograd_gradients(model, batch)
    assert set(hooks) == set(reference)
    for name, grads in reference.items():
        assert grads.abs().max() > 0
        torch.testing.assert_close(hooks[name], grads, rtol=1e-10, atol=1e-12)


def test_layer_shapes_follow_gradient_layout():
    bias = select_layers(MODELS["llama_bias"]())
    assert bias["model.layers.0.mlp.gate_proj"].d_in_total == 17
    gpt2 = select_layers(MODELS["gpt2"]())
    fc = gpt2["transformer.h.0.mlp.c_fc"]
    assert (fc.kind, fc.d_in, fc.d_out, fc.has_bias) == ("conv1d", 16, 64, True)


def test_query_gradients_only_score_the_completion():
    model = MODELS["llama"]()
    batch = query_batch(3, seed=2)
    hooks = per_sequence_gradients(model, select_layers(model), batch)
    reference = autograd_gradients(model, batch)
    for name in reference:
        torch.testing.assert_close(hooks[name], reference[name], rtol=1e-10, atol=1e-12)
    # Masking every label gives no loss at all: the prompt contributes nothing.
    batch["labels"][:] = -100
    zero = per_sequence_gradients(model, select_layers(model), batch)
    assert all(g.abs().max() == 0 for g in zero.values())


def test_hooks_are_released():
    model = MODELS["gpt2"]()
    layers = select_layers(model)
    per_sequence_gradients(model, layers, batches_of(random_sequences(2, seed=3), 2)[0])
    assert all(not layer.module._forward_hooks for layer in layers.values())
    with pytest.raises(ValueError, match="matches no module"):
        select_layers(model, r"no_such_layer")
