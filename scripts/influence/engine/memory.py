"""Memory each compute rule needs for a model: the arithmetic behind the sizing table in docs/cluster.md.

    PYTHONPATH=scripts python -m influence.engine.memory --model <checkpoint dir> --dtype bfloat16 --queries 100 --rank 32

The model is built on the meta device from its config (no weights are read), so a 70B checkpoint is sized
in seconds. Tracked layer l has a d_in × d_out weight (d_in counts a bias column); P = Σ d_in·d_out.
"""

from __future__ import annotations

import argparse
import math

import pandas as pd
import torch

from .batching import ACTIVATION_BUDGET, CHUNK_ELEMENTS
from .model import DEFAULT_LAYER_PATTERN, DTYPES, select_layers

GB = 1e9
F32 = 4


def meta_model(source: str, trust_remote_code: bool = False):
    """The model's modules with shapes but no storage."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def plan(
    model,
    pattern: str = DEFAULT_LAYER_PATTERN,
    dtype: str = "bfloat16",
    queries: int = 50,
    rank: int | None = 32,
    query_batch_size: int = 8,
    refine_chunk: int | None = None,
    refine_cache_gb: float = 4.0,
) -> pd.DataFrame:
    """GB per compute rule and what it holds at its peak (one GPU, or summed over the GPUs of a device_map;
    eigendecompose holds its tensors in host memory and sends one matrix at a time to the GPU).

    `precondition_queries (ekfac_cg)` is the same rule with estimator ekfac_cg: CG holds about six full-rank
    vectors per query it solves at once (`refine_chunk`, scoring.refine.query_chunk; None: all queries) and
    caches the refinement set's gradients (or their a, g) up to `refine_cache_gb` (scoring.refine.cache_gb)."""
    layers = select_layers(model, pattern).values()
    weights = sum(p.numel() for p in model.parameters()) * DTYPES[dtype].itemsize
    kronecker = sum(layer.d_in_total**2 + layer.d_out**2 for layer in layers) * F32  # A and S; also Q_A and Q_S
    tracked = sum(layer.d_in_total * layer.d_out for layer in layers) * F32  # Λ, or one full-rank gradient
    low_rank = sum(layer.d_in_total + layer.d_out for layer in layers) * F32 * (rank or 0)
    per_query = low_rank if rank else tracked
    activations = ACTIVATION_BUDGET * F32
    widest = max(max(layer.d_in_total, layer.d_out) for layer in layers)
    stages = {
        "fit_covariance": {"weights": weights, "A and S sums": kronecker, "activations": activations},
        "eigendecompose": {
            "A and S sums": kronecker,
            "eigenvectors": kronecker,
            "float64 eigh workspace": 3 * widest**2 * 8,
        },
        "fit_eigenvalue_correction": {
            "weights": weights,
            "eigenvectors": kronecker,
            "Λ sums": tracked,
            "per-sequence gradients": CHUNK_ELEMENTS["cuda"] * F32,
            "activations": activations,
        },
        "precondition_queries": {
            "weights": weights,
            "eigenvectors": kronecker,
            "Λ": tracked,
            f"query gradients (a batch of {query_batch_size})": query_batch_size * tracked,
            "preconditioned queries": queries * per_query,
        },
        "precondition_queries (ekfac_cg)": {
            "weights": weights,
            "eigenvectors": kronecker,
            "Λ": tracked,
            f"CG state (6 full-rank vectors x {refine_chunk or queries} queries)": 6
            * (refine_chunk or queries)
            * tracked,
            "refinement-set cache (at most cache_gb)": refine_cache_gb * GB,
            "activations": activations,
            "preconditioned queries": queries * per_query,
        },
        "score_shard": {"weights": weights, "preconditioned queries": queries * per_query, "activations": activations},
    }
    rows = [
        {"rule": rule, "component": part, "gb": size / GB}
        for rule, parts in stages.items()
        for part, size in parts.items()
    ]
    return pd.DataFrame(rows)


def gpus_needed(table: pd.DataFrame, gpu_gb: float, usable: float = 0.85) -> pd.DataFrame:
    """Per rule: total GB and the GPUs a device_map must spread it over (`usable` leaves room for CUDA's own)."""
    totals = table.groupby("rule", sort=False)["gb"].sum().rename("total_gb").reset_index()
    totals["gpus"] = [
        1 if rule == "eigendecompose" else max(1, math.ceil(gb / (gpu_gb * usable)))
        for rule, gb in zip(totals["rule"], totals["total_gb"])
    ]  # eigendecompose: host memory
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint directory or Hugging Face config directory")
    parser.add_argument("--layers", default=DEFAULT_LAYER_PATTERN, help="model.layers regex")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rank", type=int, default=32, help="scoring.query_rank; 0 for full rank")
    parser.add_argument("--query-batch-size", type=int, default=8, help="scoring.query_batch_size")
    parser.add_argument("--refine-chunk", type=int, default=0, help="scoring.refine.query_chunk; 0 for all queries")
    parser.add_argument("--refine-cache-gb", type=float, default=4.0, help="scoring.refine.cache_gb")
    parser.add_argument("--gpu-gb", type=float, default=80.0, help="memory of one GPU")
    args = parser.parse_args(argv)
    table = plan(
        meta_model(args.model),
        args.layers,
        args.dtype,
        args.queries,
        args.rank or None,
        args.query_batch_size,
        args.refine_chunk or None,
        args.refine_cache_gb,
    )
    print(table.to_string(index=False, float_format="%.2f"))
    print()
    print(gpus_needed(table, args.gpu_gb).to_string(index=False, float_format="%.1f"))


if __name__ == "__main__":
    main()
