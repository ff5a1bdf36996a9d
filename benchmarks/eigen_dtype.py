"""float32 against float64 eigendecomposition (`fitting.eigen_dtype`): its time and what it does to the scores.

    python -m benchmarks.eigen_dtype                 # W2: SmolLM2-135M, 90 MLP modules
    python -m benchmarks.eigen_dtype --workload W1

On the workloads of benchmarks.engine_speed, in one process: the covariance is fitted once; then for each
dtype the eigendecomposition (timed), the eigenvalue correction and full-rank EK-FAC scores of the candidates.
The float32 scores are compared with the float64 ones (relative L2 error, Spearman, top-10 overlap per query).
The eigendecomposition is a fixed cost per layer (independent of the fitting sample), so its share of the
pipeline shrinks as the fitting sample grows; "× pass" divides by one forward+backward over the fitting set.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from influence.engine.eigen import eigendecompose  # noqa: E402
from influence.engine.factors import fit_covariance, fit_eigenvalue_correction  # noqa: E402
from influence.engine.model import select_layers  # noqa: E402
from influence.engine.precondition import precondition_queries  # noqa: E402
from influence.engine.scores import score_candidates  # noqa: E402

from benchmarks.engine_speed import rank_agreement, run_baseline, workload  # noqa: E402

DTYPES = ("float64", "float32")


def top_overlap(a: list[list[float]], b: list[list[float]], n: int = 10) -> float:
    """Mean over queries of |top-n(a) ∩ top-n(b)| / n."""
    a, b = torch.tensor(a), torch.tensor(b)
    tops = [(set(x.topk(n).indices.tolist()), set(y.topk(n).indices.tolist())) for x, y in zip(a, b)]
    return sum(len(x & y) for x, y in tops) / (n * len(tops))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="W2", choices=["W1", "W2"])
    args = parser.parse_args()
    one = run_baseline(args.workload)["pass"]
    model, module_names, fit, cand, query = workload(args.workload)
    layers = select_layers(model, "(" + "|".join(n.replace(".", r"\.") for n in module_names) + ")$")
    ids = [str(i) for i in range(query[0]["input_ids"].shape[0])]
    covariance = fit_covariance(model, layers, fit, "true", seed=0, progress=False)
    seconds, scores = {}, {}
    for dtype in DTYPES:
        start = time.perf_counter()
        eigen = eigendecompose(covariance, progress=False, dtype=dtype)
        seconds[dtype] = time.perf_counter() - start
        correction = fit_eigenvalue_correction(model, layers, eigen, fit, "true", seed=1, progress=False)
        pre = precondition_queries(
            model, layers, ids, query, estimator="ekfac", eigen=eigen, correction=correction, progress=False
        )
        scores[dtype] = score_candidates(model, layers, pre, cand, progress=False).total.T.tolist()
        print(f"{dtype} done ({seconds[dtype]:.1f} s eigendecomposition)", flush=True)
    print(
        f"\n## {args.workload}: one forward+backward over the fitting set {one:.1f} s, {torch.get_num_threads()} threads\n"
    )
    print(
        "| eigen_dtype | eigendecomposition s | × pass | speed-up | scores: relative L2 vs float64 | Spearman | top-10 overlap |"
    )
    print("|---|---|---|---|---|---|---|")
    for dtype in DTYPES:
        rel, rho = rank_agreement(scores["float64"], scores[dtype])
        overlap = top_overlap(scores["float64"], scores[dtype])
        print(
            f"| {dtype} | {seconds[dtype]:.1f} | {seconds[dtype] / one:.2f} | {seconds['float64'] / seconds[dtype]:.2f}× "
            f"| {rel:.2e} | {rho:.5f} | {overlap:.2f} |"
        )


if __name__ == "__main__":
    main()
