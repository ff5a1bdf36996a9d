"""Fixtures shared by the tests; the helpers they use live in tests/helpers.py."""

import pytest
import torch
from helpers import MODELS, batches_of, make_tiny_inputs, random_sequences, snakemake, tiny_config


@pytest.fixture(scope="module")
def fitted():
    """(model, layers, covariance, eigen, correction): a tiny Llama's factors in float64, empirical Fisher."""
    from influence.engine.eigen import eigendecompose
    from influence.engine.factors import fit_covariance, fit_eigenvalue_correction
    from influence.engine.model import select_layers

    model = MODELS["llama"]()
    layers = select_layers(model)
    fit = batches_of(random_sequences(8, seed=30), 4)
    options = dict(dtype=torch.float64, progress=False)
    covariance = fit_covariance(model, layers, fit, **options)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, fit, **options)
    return model, layers, covariance, eigen, correction


@pytest.fixture(params=sorted(MODELS))
def model_name(request):
    return request.param


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny workflow run on the local machine: (workdir, config path, results dir)."""
    tmp = tmp_path_factory.mktemp("tiny")
    make_tiny_inputs(tmp)
    config = tiny_config(tmp)
    snakemake("--cores", 2, "--configfile", config, "--directory", tmp)
    return tmp, config, tmp / "results" / "tiny"
