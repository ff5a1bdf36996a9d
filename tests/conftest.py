"""Tiny models and data built in the tests (float64 where it matters)."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "scripts", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from influence.engine.data import pad_batch  # noqa: E402

VOCAB = 50


def tiny_llama(mlp_bias: bool = False, seed: int = 0, dtype=torch.float64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        mlp_bias=mlp_bias,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).to(dtype).eval()


def tiny_gpt2(seed: int = 0, dtype=torch.float64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_embd=16, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config).to(dtype).eval()


MODELS = {"llama": tiny_llama, "llama_bias": lambda **k: tiny_llama(mlp_bias=True, **k), "gpt2": tiny_gpt2}


def random_sequences(n: int, seed: int, low: int = 5, high: int = 12) -> list[list[int]]:
    """Sequences of random lengths, so batches carry right padding."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=gen)
    return [torch.randint(0, VOCAB, (int(t),), generator=gen).tolist() for t in lengths]


def batches_of(sequences, size: int):
    return [pad_batch(sequences[i : i + size]) for i in range(0, len(sequences), size)]


def query_batch(n: int, seed: int):
    """Queries whose first half is prompt (no loss) and second half completion."""
    sequences = random_sequences(n, seed, 6, 10)
    labels = [[-100] * (len(s) // 2) + s[len(s) // 2 :] for s in sequences]
    return pad_batch(sequences, labels)


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
    from tiny import make_tiny_inputs, snakemake, tiny_config

    tmp = tmp_path_factory.mktemp("tiny")
    make_tiny_inputs(tmp)
    config = tiny_config(tmp)
    snakemake("--cores", 2, "--configfile", config, "--directory", tmp)
    return tmp, config, tmp / "results" / "tiny"
