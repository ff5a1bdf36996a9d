"""Cost of the gradient index on SmolLM2-135M-Instruct: build against a plain pass, search, size.

    python -m benchmarks.index_speed                    # everything below, ~5 min on 2 idle CPU cores
    python -m benchmarks.index_speed --rows 100000 --threads 2

1. Build: `project_corpus` (frozen weights, hooks, k × k projections of the 90 MLP modules, exact norms)
   against one plain forward+backward pass with every weight trainable, over the same 64 random sequences
   of 64 tokens; best of `--repeats`, passes interleaved so machine load hits both alike.
2. Real glosses: seconds per sequence of building the index over `--glosses` WordNet glosses (the default
   corpus), and the time that implies for index.max_sequences (4096).
3. Search: faiss exact inner-product search of a batch of `--queries` queries over `--rows` synthetic
   float32 rows of D dims (the index with index.dim = D), on `--threads` threads.
4. Size per sequence for SmolLM2 and a Llama-2-7B-shaped model, and for 10M sequences.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from influence.engine.data import pad_batch, summed_loss  # noqa: E402
from influence.engine.index import project_corpus, projector_for, search  # noqa: E402
from influence.engine.model import default_gguf_path, load_model, load_tokenizer, select_layers  # noqa: E402
from influence.engine.projection import ProjectionSpec  # noqa: E402

LLAMA_7B_MLP = 32 * 3  # modules tracked by the default pattern (gate, up, down of 32 blocks)


def plain_pass(model, batches) -> float:
    model.requires_grad_(True)
    start = time.perf_counter()
    for batch in batches:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        summed_loss(logits, batch["labels"]).backward()
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def build(model, layers, batches, spec: ProjectionSpec) -> float:
    projector = projector_for(spec, layers)
    start = time.perf_counter()
    project_corpus(model, layers, projector, batches, progress=False)
    return time.perf_counter() - start


def size_rows(k: int, dims: list[int]) -> list[dict]:
    rows = []
    for model_name, modules in (("SmolLM2-135M", 90), ("Llama-2-7B", LLAMA_7B_MLP)):
        for dim in [None, *dims]:
            floats = dim or modules * k * k
            per_sequence = floats * 2 + 4  # float16 vector + float32 norm
            rows.append(
                {
                    "model": model_name,
                    "k": k,
                    "dim": dim,
                    "floats_per_sequence": floats,
                    "bytes_per_sequence_float16": per_sequence,
                    "gb_for_10M_sequences": per_sequence * 1e7 / 1e9,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=32)  # index.k default
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--glosses", type=int, default=256)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gguf = default_gguf_path()
    model, tokenizer = load_model(gguf, "float32", "cpu", False), load_tokenizer(gguf)
    layers = select_layers(model)
    gen = torch.Generator().manual_seed(0)
    sequences = torch.randint(0, len(tokenizer), (64, 64), generator=gen).tolist()
    batches = [pad_batch(sequences[i : i + 32]) for i in range(0, 64, 32)]
    spec = ProjectionSpec(k=args.k)
    plain, index = [], []
    for _ in range(args.repeats):
        plain.append(plain_pass(model, batches))
        index.append(build(model, layers, batches, spec))
    out = {"plain_pass_s": min(plain), "index_build_s": min(index), "build_over_pass": min(index) / min(plain)}

    from influence.engine.sequences import fitting_sample
    from influence.inputs.corpus import read_wordnet_glosses

    glosses = read_wordnet_glosses()
    chosen = fitting_sample(glosses["text"].tolist(), args.glosses, 0)
    ids = [tokenizer(t, truncation=True, max_length=64)["input_ids"] for t in chosen]
    ids = sorted(ids, key=len, reverse=True)
    gloss_batches = [pad_batch(ids[i : i + 32]) for i in range(0, len(ids), 32)]
    seconds = build(model, layers, gloss_batches, spec)
    out.update(
        gloss_tokens_mean=float(np.mean([len(i) for i in ids])),
        gloss_seconds_per_sequence=seconds / len(ids),
        max_sequences_4096_minutes=seconds / len(ids) * 4096 / 60,
        whole_corpus_hours=seconds / len(ids) * len(glosses) / 3600,
    )

    rng = np.random.default_rng(0)
    for dim in args.dims:
        vectors = rng.standard_normal((args.rows, dim), dtype=np.float32)
        queries = rng.standard_normal((args.queries, dim), dtype=np.float32)
        search(queries[:1], vectors[:1000], 10, threads=args.threads)  # warm up faiss
        start = time.perf_counter()
        search(queries, vectors, 40, threads=args.threads)
        out[f"search_s_rows{args.rows}_dim{dim}_q{args.queries}"] = time.perf_counter() - start
        del vectors
    out["sizes"] = size_rows(args.k, args.dims)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
