"""Cost of one ekfac_cg step against one full-rank scoring of the refinement set, all queries at once.

    python -m benchmarks.cg_cost --workload tiny --eval-dir results/eval/evaluation/seed~0
    python -m benchmarks.cg_cost --workload W2 --sequences 16

tiny: the evaluation's tiny model (trained by `snakemake --configfile config/eval.yaml evaluate`), its planted
      corpus as the refinement set and its queries; factors fitted on that corpus (true Fisher), float32.
W2:   SmolLM2-135M-Instruct, the MLPs of all 30 blocks (90 modules), 4 queries and random 64-token sequences
      as in benchmarks/engine_speed.py; factors fitted on the refinement sequences themselves (their values do
      not change the cost). The W2 refinement set is 64 sequences; `--sequences` measures a smaller one.

Times are CPU seconds (process time, `--threads` torch threads, 1 by default), since the machine this was
measured on is shared. Prints: capture time (one model pass, cached for every step), seconds per CG step (one product with F plus
the vector updates, the EK-FAC preconditioner being a division in its eigenbasis), seconds of one full-rank
scoring of the refinement set against the same queries (a model pass plus the contraction), and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from influence.engine.eigen import eigendecompose  # noqa: E402
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction  # noqa: E402
from influence.engine.model import select_layers  # noqa: E402
from influence.engine.precondition import Damping, precondition_queries  # noqa: E402
from influence.engine.refine import DampedFisher, EkfacInverse, Refine, refine_queries  # noqa: E402
from influence.engine.refinement_set import RefinementSet  # noqa: E402
from influence.engine.scores import score_many  # noqa: E402


def tiny_workload(eval_dir: Path):
    import pandas as pd
    from influence.engine.data import iter_batches, query_batches
    from influence.engine.model import load_model, load_tokenizer
    from influence.evaluation.training import encode_texts
    from influence.inputs.queries import load_queries

    model_dir = eval_dir / "tiny" / "model"
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    texts = pd.read_parquet(eval_dir / "planted" / "documents.parquet")["text"].tolist()
    batches = list(iter_batches(encode_texts(tokenizer, texts, 48), 16, tokenizer.pad_token_id))
    queries = load_queries(eval_dir / "planted" / "queries.yaml")
    return model, select_layers(model), batches, query_batches(tokenizer, queries), [q.id for q in queries]


def w2_workload(n_sequences: int):
    from benchmarks.engine_speed import workload

    model, _, fit, _, query = workload("W2")
    rows = torch.cat([b["input_ids"] for b in fit])[:n_sequences]
    batches = [{k: v[i : i + 8] for k, v in _batch(rows).items()} for i in range(0, len(rows), 8)]
    layers = select_layers(model, r"mlp\.(gate|up|down)_proj$")
    return model, layers, batches, query, [f"q{i}" for i in range(query[0]["input_ids"].shape[0])]


def _batch(rows):
    return {"input_ids": rows, "attention_mask": torch.ones_like(rows), "labels": rows.clone()}


def timed(fn, repeats: int = 1) -> float:
    """CPU seconds per call: on a machine shared with other jobs, wall time measures the neighbours."""
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["tiny", "W2"], required=True)
    parser.add_argument("--eval-dir", type=Path, default=Path("results/eval/evaluation/seed~0"))
    parser.add_argument("--sequences", type=int, default=64, help="W2 refinement sequences")
    parser.add_argument("--steps", type=int, default=2, help="CG products timed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU seconds are summed over them)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.workload == "tiny":
        model, layers, batches, queries, ids = tiny_workload(args.eval_dir)
    else:
        model, layers, batches, queries, ids = w2_workload(args.sequences)
    n_seq = sum(int(b["input_ids"].shape[0]) for b in batches)
    params = sum(lay.d_out * lay.d_in_total for lay in layers.values())
    print(f"{args.workload}: {len(layers)} layers, {params:,} parameters, {n_seq} sequences, {len(ids)} queries")
    start = time.process_time()
    covariance = fit_covariance(model, layers, batches, "true", 0, progress=False)
    eigen = eigendecompose(covariance, progress=False)
    correction = fit_eigenvalue_correction(model, layers, eigen, batches, "true", 0, progress=False)
    print(f"factors fitted in {time.process_time() - start:.1f} CPU s")
    damping = Damping()
    full = precondition_queries(
        model,
        layers,
        ids,
        queries,
        estimator="ekfac",
        eigen=eigen,
        correction=correction,
        damping=damping,
        progress=False,
    )
    scoring = timed(lambda: score_many(model, layers, {"full": full}, batches, progress=False))
    inverse = EkfacInverse(layers, eigen, correction, damping, torch.float32)
    start = time.process_time()
    refinement = RefinementSet(model, layers, batches, "true", 0, torch.float32, 4 * 2**30, rotations=inverse.rotations)
    capture = time.process_time() - start
    print(refinement.describe())
    operator = DampedFisher(refinement, inverse.damping, dict.fromkeys(layers, 0))
    vectors = {n: torch.randn(len(ids), lay.d_out, lay.d_in_total) for n, lay in layers.items()}
    product = timed(lambda: operator(vectors), args.steps)
    print(f"capture {capture:.2f} s; one product with F {product:.3f} s; one full-rank scoring {scoring:.3f} s")
    print(f"step cost / scoring cost = {product / scoring:.2f}")
    if args.workload == "tiny":
        settings = Refine(tolerance=0.0)  # the default step limit, every step taken
        total = timed(
            lambda: refine_queries(
                model, layers, ids, queries, batches, eigen, correction, damping, settings, "true", 0, progress=False
            )
        )
        print(
            f"ekfac_cg, {settings.steps} steps, all {len(ids)} queries: {total:.2f} s ({total / len(ids):.4f} s per query)"
        )


if __name__ == "__main__":
    main()
