"""Inputs of a tiny but complete workflow run: random tiny Llama with SmolLM2's tokenizer, real glosses."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
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
    import torch
    from influence.engine.model import default_gguf_path, load_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(default_gguf_path())
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
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
