"""Artefacts round-trip through safetensors, and bad input stops with a named culprit."""

import pytest
import torch
from helpers import MODELS, batches_of, query_batch, random_sequences
from influence.engine import artefacts, files, names
from influence.engine.data import encode_query
from influence.engine.eigen import eigendecompose
from influence.engine.factors import fit_covariance
from influence.engine.model import fingerprint, select_layers
from influence.engine.precondition import precondition_queries
from torch import nn

F64 = dict(dtype=torch.float64, progress=False)


def test_artefacts_round_trip(fitted, tmp_path):
    model, layers, covariance, eigen, correction = fitted
    digest = fingerprint(layers)
    artefacts.save_factor_sums(tmp_path / "cov.safetensors", covariance, "covariance", digest, {"fisher": "true"})
    loaded = artefacts.load_factor_sums(tmp_path / "cov.safetensors", "covariance", digest)
    assert (loaded.n_tokens, loaded.n_sequences) == (covariance.n_tokens, covariance.n_sequences)
    for module, factors in covariance.sums.items():
        for factor, tensor in factors.items():
            assert torch.equal(loaded.sums[module][factor], tensor)
    artefacts.save_eigen(tmp_path / "eigen.safetensors", eigen, digest, {})
    eigen2 = artefacts.load_eigen(tmp_path / "eigen.safetensors", digest)
    gate, up = eigen2["model.layers.0.mlp.gate_proj"], eigen2["model.layers.0.mlp.up_proj"]
    assert gate[names.ACTIVATION_EIGENVECTORS] is up[names.ACTIVATION_EIGENVECTORS]  # sharing restored
    pre = precondition_queries(
        model,
        layers,
        ["a", "b"],
        [query_batch(2, seed=31)],
        estimator="ekfac",
        eigen=eigen2,
        correction=correction,
        rank=3,
        **F64,
    )
    artefacts.save_preconditioned(tmp_path / "pre.safetensors", pre, digest, {"rank": 3})
    pre2 = artefacts.load_preconditioned(tmp_path / "pre.safetensors", digest)
    assert pre2.query_ids == ["a", "b"] and pre2.rank == 3 and pre2.damping == pytest.approx(pre.damping)
    assert torch.equal(
        pre2.layers["model.layers.1.mlp.down_proj"][names.LEFT], pre.layers["model.layers.1.mlp.down_proj"][names.LEFT]
    )
    assert not list(tmp_path.glob("*.partial"))


def test_factors_of_another_model_are_refused(fitted, tmp_path):
    _, layers, covariance, _, _ = fitted
    artefacts.save_factor_sums(tmp_path / "cov.safetensors", covariance, "covariance", fingerprint(layers), {})
    other = fingerprint(select_layers(MODELS["llama"](seed=1)))
    with pytest.raises(ValueError, match="another model"):
        artefacts.load_factor_sums(tmp_path / "cov.safetensors", "covariance", other)
    with pytest.raises(ValueError, match="expected 'eigen'"):
        artefacts.load_eigen(tmp_path / "cov.safetensors")


def test_corrupt_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "eigen.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(ValueError, match="eigen.safetensors"):
        artefacts.load_eigen(bad)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        artefacts.load_eigen(tmp_path / "missing.safetensors")


def test_non_finite_factors_and_gradients_are_named(fitted):
    model, layers, covariance, _, _ = fitted
    covariance.sums["model.layers.1.mlp.up_proj"][names.GRADIENT_COVARIANCE][0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="model.layers.1.mlp.up_proj"):
        eigendecompose(covariance, progress=False)
    broken = MODELS["llama"]()
    with torch.no_grad():
        broken.model.layers[0].mlp.up_proj.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="loss"):
        fit_covariance(broken, select_layers(broken), batches_of(random_sequences(2, seed=1), 2), **F64)


def test_unsupported_layers_and_empty_completions_are_named():
    class Convs(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Sequential(nn.Conv2d(1, 1, 1))

    with pytest.raises(ValueError, match="unsupported module types"):
        select_layers(Convs(), r"mlp")

    class Tokenizer:
        def __call__(self, text, add_special_tokens=True):
            return type("Encoding", (), {"input_ids": [ord(c) for c in text]})

    assert encode_query(Tokenizer(), "q", "ab", "c") == ([97, 98, 99], [-100, -100, 99])
    with pytest.raises(ValueError, match="query 'capital-fr'.*empty"):
        encode_query(Tokenizer(), "capital-fr", "The capital of France is", "")


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "artefact.bin"
    with files.atomic_path(target) as tmp:
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"first" and not list(target.parent.glob("*.partial"))
