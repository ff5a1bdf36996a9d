"""Helpers shared by every test (the one module they import; conftest.py holds only fixtures).

- tiny models and data: `tiny_llama` (the one model builder), `tiny_gpt2`, `MODELS`, `random_sequences`,
  `batches_of`, `query_batch`;
- dense float64 oracles: `autograd_gradients`, `fisher`, `solve`, `gauss_newton`;
- the tiny workflow run: `make_tiny_inputs` (a random tiny Llama with SmolLM2's tokenizer, real WordNet
  glosses), `tiny_config`, `snakemake` (the real CLI), `planned_jobs`.
"""

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from influence.engine.data import pad_batch, summed_loss
from influence.engine.model import select_layers

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 50

# Tiny models and data ----------------------------------------------------------------------------------


def tiny_llama(
    mlp_bias: bool = False, seed: int = 0, dtype=torch.float64, hidden: int = 16, intermediate: int = 24, vocab=VOCAB
):
    """The one tiny-model builder: a random 2-layer Llama (4 heads, 2 KV heads, tied embeddings), in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
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


# Dense float64 oracles ---------------------------------------------------------------------------------


def autograd_gradients(
    model, batch: dict, fisher: str = "empirical", labels: torch.Tensor | None = None, pattern: str | None = None
) -> dict:
    """{layer: (N, d_out, d_in [+1])} from one backward pass per sequence, padding stripped (layers: `pattern`,
    default the MLP projections)."""
    ref = copy.deepcopy(model).eval().requires_grad_(True)
    layers = select_layers(ref) if pattern is None else select_layers(ref, pattern)
    out = {name: [] for name in layers}
    for row in range(batch["input_ids"].shape[0]):
        length = int(batch["attention_mask"][row].sum())
        ids = batch["input_ids"][row : row + 1, :length]
        lab = (batch["labels"] if labels is None else labels)[row : row + 1, :length]
        ref.zero_grad()
        summed_loss(ref(input_ids=ids).logits, lab, fisher).backward()
        for name, layer in layers.items():
            grad = layer.module.weight.grad
            grad = grad.T if layer.kind == "conv1d" else grad
            if layer.has_bias:
                grad = torch.cat([grad, layer.module.bias.grad[:, None]], dim=1)
            out[name].append(grad.clone())
    return {name: torch.stack(grads) for name, grads in out.items()}


def fisher(grads: torch.Tensor) -> torch.Tensor:
    """F = mean_n vec(G_n) vec(G_n)ᵀ with row-major vec, so vec(Q_Sᵀ G Q_A) = (Q_S ⊗ Q_A)ᵀ vec(G)."""
    flat = grads.flatten(1)  # (N, d_out·d_in)
    return flat.T @ flat / flat.shape[0]


def solve(matrix: torch.Tensor, damping: float, grads: torch.Tensor) -> torch.Tensor:
    """(M + λI)⁻¹ vec(G) for each G of a (Q, d_out, d_in) batch, as a dense solve."""
    eye = torch.eye(matrix.shape[0], dtype=matrix.dtype)
    return torch.linalg.solve(matrix + damping * eye, grads.flatten(1).T).T.reshape(grads.shape)


def gauss_newton(model, batches) -> torch.Tensor:
    """The mean Gauss-Newton Hessian (P, P) of the summed loss over the sequences of `batches`, in our gradient
    layout: each sequence's full logits Jacobian J (T·V, P) by reverse mode, one sequence at a time (padding
    stripped), then Σ_t J_tᵀ (diag p_t − p_t p_tᵀ) J_t over its scored positions."""
    from torch.func import functional_call, jacrev

    layers = select_layers(model)
    params = dict(model.named_parameters())
    total, count = 0.0, 0
    for batch in batches:
        for row in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][row].sum())
            ids, labels = batch["input_ids"][row : row + 1, :length], batch["labels"][row, :length]
            jac = jacrev(lambda p, ids=ids: functional_call(model, p, (ids,)).logits[0])(params)  # {param: (T, V, ...)}
            blocks = []
            for name, layer in layers.items():
                w = jac[f"{name}.weight"]
                w = w.transpose(-1, -2) if layer.kind == "conv1d" else w
                if layer.has_bias:
                    w = torch.cat([w, jac[f"{name}.bias"][..., None]], dim=-1)
                blocks.append(w.flatten(2))
            jacobian = torch.cat(blocks, dim=2).detach()  # (T, V, P)
            probs = torch.softmax(model(input_ids=ids).logits[0].detach(), dim=-1)  # (T, V)
            scored = torch.zeros(length, dtype=probs.dtype)
            scored[:-1] = (labels[1:] != -100).to(probs)  # position t predicts token t + 1
            hessian = (torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]) * scored[:, None, None]
            total = total + torch.einsum("tvp,tvw,twq->pq", jacobian, hessian, jacobian)
            count += 1
    return total / count


# The tiny workflow run ---------------------------------------------------------------------------------
TINY_QUERIES = [
    {
        "id": "capital_france",
        "prompt": "The capital of France is",
        "completion": " Paris",
        "tags": {
            "group": "capital_france",
            "lang": "en",
            "order": "original",
            "kind": "capital",
            "a": "France",
            "b": "Paris",
        },
    },
    {
        "id": "capital_france_fr",
        "prompt": "La capitale de la France est",
        "completion": " Paris",
        "tags": {"group": "capital_france", "lang": "fr", "order": "original"},
    },
    {
        "id": "planet_largest",
        "prompt": "The largest planet in the solar system is",
        "completion": " Jupiter",
        "tags": {
            "group": "planet_largest",
            "lang": "en",
            "order": "original",
            "kind": "planet",
            "a": "the solar system",
            "b": "Jupiter",
        },
    },
]
IDENTICAL_SEQ = "identical_to_query"
# Rules that run the model (GPU_JOB): what a cluster must give a GPU.
GPU_RULES = {
    "preflight",
    "fit_covariance",
    "eigendecompose",
    "fit_eigenvalue_correction",
    "precondition_queries",
    "score_shard",
    "token_scores",
    "score_probes",
    "sample_scores",
}


def _no_controller_env() -> dict:
    """The environment for Snakemake runs that use no SLURM cluster.

    The SLURM executor plugin runs `scontrol show config` at every CLI start to word its help; with the
    SLURM client installed (tests/integration) but no controller running, scontrol retries for its 10 s
    timeout. Here `scontrol` answers "no cluster" at once; the SLURM integration test starts a real cluster
    and runs the real scontrol.
    """
    shim = Path(tempfile.mkdtemp(prefix="no-slurm-controller-"))
    (shim / "scontrol").symlink_to(shutil.which("false") or "/bin/false")
    return {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}


NO_CONTROLLER_ENV = _no_controller_env()


def snakemake(*args, cwd=ROOT, check=True) -> subprocess.CompletedProcess:
    """Run the real Snakemake CLI on the repository's workflow."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *map(str, args)]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=NO_CONTROLLER_ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(*args) -> dict[str, int]:
    """Jobs per rule that a dry run with these arguments plans (its `rules` summary table)."""
    out = snakemake("--dry-run", "--quiet", "rules", *args).stdout
    return {
        line.split()[0]: int(line.split()[1])
        for line in out.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit() and line.split()[0] != "total"
    }


def build_tiny_model(directory: Path) -> None:
    """A random 2-layer Llama saved with save_pretrained, with SmolLM2's real tokenizer."""
    from influence.engine.model import default_gguf_path, load_tokenizer

    tokenizer = load_tokenizer(default_gguf_path())
    tiny_llama(hidden=32, intermediate=64, vocab=len(tokenizer), dtype=torch.float32).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def write_corpus(path: Path, n: int = 300) -> None:
    """The first `n` WordNet glosses, the glosses naming the queries' answers, and one exact query text."""
    import pandas as pd
    from influence.inputs.corpus import read_wordnet_glosses, write_corpus_jsonl

    glosses = read_wordnet_glosses()
    relevant = glosses[glosses["lemma"].isin(["Paris", "Jupiter", "France"])]
    corpus = pd.concat([glosses.head(n), relevant]).drop_duplicates("seq_id")[["seq_id", "text"]]
    query = TINY_QUERIES[0]
    identical = pd.DataFrame({"seq_id": [IDENTICAL_SEQ], "text": [query["prompt"] + query["completion"]]})
    write_corpus_jsonl(pd.concat([corpus, identical], ignore_index=True), path)


def tiny_config(tmp: Path, name: str = "tiny", run: str = "tiny", fitting: dict | None = None, **scoring) -> Path:
    config = {
        "run": run,
        "model": {"source": str(tmp / "model")},
        "corpus": {"path": str(tmp / "corpus.jsonl"), "max_tokens": 32},
        "queries": str(tmp / "queries.yaml"),
        "fitting": {"n_sequences": 96, "batch_size": 16, **(fitting or {})},
        "tfidf": {"top_k": 25, "n_features": 65536},
        "scoring": {"query_rank": 8, "n_shards": 2, "batch_size": 16, "top_n": 5, **scoring},
        "analysis": {"n_queries": 2, "sample_size": 60, "true_k": 5, "ranks": [1, 4, 32]},
        "resources": {"mem_mb": 2000, "runtime": 10},
    }
    path = tmp / f"config_{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def make_tiny_inputs(tmp: Path) -> None:
    """The tiny model, corpus and queries that every tiny config points at."""
    build_tiny_model(tmp / "model")
    write_corpus(tmp / "corpus.jsonl")
    (tmp / "queries.yaml").write_text(yaml.safe_dump(TINY_QUERIES, allow_unicode=True))
