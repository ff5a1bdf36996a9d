"""Covariances, merging, eigendecomposition and the EK-FAC eigenvalue correction."""

from functools import partial

import torch
from helpers import MODELS, autograd_gradients, batches_of, fisher, random_sequences
from influence.engine import names
from influence.engine.data import sample_labels, summed_loss
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
from influence.engine.model import select_layers

F64 = dict(dtype=torch.float64, progress=False)


def explicit_covariances(model, batches):
    """A and S from plain hooks and retained output gradients, as einsums over real tokens."""
    ref_layers = select_layers(model)
    inputs, outputs = {}, {}

    def keep(name, module, args, output):
        inputs[name], outputs[name] = args[0], output
        output.retain_grad()

    handles = [layer.module.register_forward_hook(partial(keep, name)) for name, layer in ref_layers.items()]
    model.requires_grad_(True)
    sums = {name: [0, 0] for name in ref_layers}
    tokens = 0
    for batch in batches:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        summed_loss(logits, batch["labels"]).backward()
        mask = batch["attention_mask"].to(torch.float64)
        tokens += int(mask.sum())
        for name, layer in ref_layers.items():
            a = inputs[name]
            if layer.has_bias:
                a = torch.cat([a, torch.ones_like(a[..., :1])], -1)
            a = a * mask[..., None]
            g = outputs[name].grad
            sums[name][0] = sums[name][0] + torch.einsum("bti,btj->ij", a, a)
            sums[name][1] = sums[name][1] + torch.einsum("bti,btj->ij", g, g)
    for h in handles:
        h.remove()
    return {name: (a / tokens, s / tokens) for name, (a, s) in sums.items()}, tokens


def test_covariances_equal_explicit_einsums(model_name):
    model = MODELS[model_name]()
    batches = batches_of(random_sequences(12, seed=4), 5)
    fitted = fit_covariance(model, select_layers(model), batches, fisher="empirical", **F64)
    expected, tokens = explicit_covariances(MODELS[model_name](), batches)
    assert fitted.n_tokens == tokens and fitted.n_sequences == 12
    for name, (a, s) in expected.items():
        torch.testing.assert_close(fitted.mean(name, names.ACTIVATION_COVARIANCE), a, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fitted.mean(name, names.GRADIENT_COVARIANCE), s, rtol=1e-10, atol=1e-12)


def test_merging_halves_equals_fitting_the_whole():
    model = MODELS["llama"]()
    layers = select_layers(model)
    batches = batches_of(random_sequences(12, seed=5), 3)
    # True Fisher: labels are drawn per batch from (seed, batch index), so shards that say where
    # they start draw the labels the whole run draws.
    whole = fit_covariance(model, layers, batches, fisher="true", **F64)
    merged = fit_covariance(model, layers, batches[:2], fisher="true", **F64).merge(
        fit_covariance(model, layers, batches[2:], fisher="true", first_batch=2, **F64)
    )
    assert (merged.n_tokens, merged.n_sequences) == (whole.n_tokens, whole.n_sequences)
    for name in whole.sums:
        for factor, tensor in whole.sums[name].items():
            torch.testing.assert_close(merged.sums[name][factor], tensor, rtol=1e-12, atol=1e-12)


def test_eigenvalue_correction_equals_dense_rotation_of_explicit_fisher(model_name):
    model = MODELS[model_name]()
    layers = select_layers(model)
    batches = batches_of(random_sequences(10, seed=6), 4)
    eigen = eigendecompose(fit_covariance(model, layers, batches, fisher="empirical", **F64), progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, batches, fisher="empirical", **F64)
    grads = autograd_gradients(model, {k: torch.cat([b[k] for b in _padded(batches)]) for k in batches[0]})
    for name, g in grads.items():
        basis = torch.kron(eigen[name][names.GRADIENT_EIGENVECTORS], eigen[name][names.ACTIVATION_EIGENVECTORS])
        expected = torch.diagonal(basis.T @ fisher(g) @ basis).reshape(g.shape[1:])
        torch.testing.assert_close(correction.mean(name, names.EIGENVALUE_CORRECTION), expected, rtol=1e-8, atol=1e-12)


def _padded(batches):
    """Batches padded to one width, so they concatenate."""
    width = max(b["input_ids"].shape[1] for b in batches)
    pads = {"input_ids": 0, "attention_mask": 0, "labels": -100}
    return [
        {k: torch.nn.functional.pad(v, (0, width - v.shape[1]), value=pads[k]) for k, v in b.items()} for b in batches
    ]


def test_eigendecomposition_reconstructs_and_shares_identical_inputs():
    model = MODELS["llama"]()
    layers = select_layers(model)
    covariance = fit_covariance(model, layers, batches_of(random_sequences(8, seed=7), 4), **F64)
    eigen = eigendecompose(covariance, progress=False)
    gate, up = eigen["model.layers.0.mlp.gate_proj"], eigen["model.layers.0.mlp.up_proj"]
    assert gate[names.ACTIVATION_EIGENVECTORS] is up[names.ACTIVATION_EIGENVECTORS]
    for name, factors in eigen.items():
        for cov_name, (values, vectors) in (
            (names.ACTIVATION_COVARIANCE, (names.ACTIVATION_EIGENVALUES, names.ACTIVATION_EIGENVECTORS)),
            (names.GRADIENT_COVARIANCE, (names.GRADIENT_EIGENVALUES, names.GRADIENT_EIGENVECTORS)),
        ):
            q, lam = factors[vectors], factors[values]
            assert q.dtype == torch.float64
            torch.testing.assert_close(
                q @ torch.diag(lam) @ q.T, covariance.mean(name, cov_name), rtol=1e-8, atol=1e-12
            )


def test_true_fisher_samples_follow_the_model_distribution():
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0]]).repeat(40000, 1)
    labels = sample_labels(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(labels, minlength=4).double() / labels.numel()
    torch.testing.assert_close(freq, torch.softmax(logits[0].double(), 0), atol=0.01, rtol=0)


def test_true_fisher_is_reproducible_and_differs_from_empirical():
    model = MODELS["llama"]()
    layers = select_layers(model)
    batches = batches_of(random_sequences(6, seed=8), 3)
    one, two = (fit_covariance(model, layers, batches, fisher="true", seed=3, **F64) for _ in range(2))
    empirical = fit_covariance(model, layers, batches, fisher="empirical", **F64)
    name, s = "model.layers.1.mlp.down_proj", names.GRADIENT_COVARIANCE
    torch.testing.assert_close(one.sums[name][s], two.sums[name][s])
    assert not torch.allclose(one.sums[name][s], empirical.sums[name][s])
