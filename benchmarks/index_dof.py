"""How much of the EK-FAC metric a k × k index block can hold: the effective dimension per layer.

    python -m benchmarks.index_dof results/idxacc/factors/layers~mlp      # a run's fitted factors
    python -m benchmarks.index_dof DIR --damping 0.1 --ks 16 32 64 128 256 512

An EK-FAC score is Σ_ij q̂_ij ẑ_ij / (Λ_ij + λ) over the cells of each layer's Kronecker eigenbasis. A cell
counts in proportion to Λ_ij / (Λ_ij + λ) (1 where the curvature is far above the damping, 0 far below); the
sum over cells is the layer's effective dimension (degrees of freedom of the damped metric). The index's
`eigen` projection keeps the k × k cells of the largest factor eigenvalues; this prints the share of the
effective dimension they hold, summed over layers. Reads eigen.safetensors and lambda.safetensors (relative
damping: λ = value × mean Λ per layer, as the workflow's default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from influence.engine import artefacts, names  # noqa: E402
from influence.engine.precondition import Damping  # noqa: E402


def block_shares(eigen: dict, correction: dict, damping: Damping, ks: list[int]) -> tuple[float, dict[int, float], int]:
    """(mean effective dimension per layer, {k: share of the summed effective dimension in the top k × k
    eigenvalue block}, mean cells per layer)."""
    total, kept, cells = 0.0, dict.fromkeys(ks, 0.0), 0
    for name, layer in eigen.items():
        values = correction[name].double().clamp(min=0)  # (d_out, d_in)
        weight = values / (values + damping.for_layer(values))
        total += float(weight.sum())
        cells += weight.numel()
        top_s = torch.argsort(layer[names.GRADIENT_EIGENVALUES].double(), descending=True)
        top_a = torch.argsort(layer[names.ACTIVATION_EIGENVALUES].double(), descending=True)
        for k in ks:
            kept[k] += float(weight[top_s[:k]][:, top_a[:k]].sum())
    return total / len(eigen), {k: kept[k] / total for k in ks}, cells // len(eigen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "factors", type=Path, help="a factors directory holding eigen.safetensors and lambda.safetensors"
    )
    parser.add_argument("--damping", type=float, default=0.1, help="relative damping (× mean Λ per layer)")
    parser.add_argument("--ks", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    args = parser.parse_args()
    for name in ("eigen.safetensors", "lambda.safetensors"):
        if not (args.factors / name).exists():
            sys.exit(
                f"{args.factors / name} does not exist: pass a factors directory of a run (fit the factors first)."
            )
    curvature = artefacts.load_curvature(
        {
            names.EIGEN_INPUT: args.factors / "eigen.safetensors",
            names.CORRECTION_INPUT: args.factors / "lambda.safetensors",
        }
    )
    correction = {m: curvature["correction"].mean(m, names.EIGENVALUE_CORRECTION) for m in curvature["eigen"]}
    dof, shares, cells = block_shares(curvature["eigen"], correction, Damping("relative", args.damping), args.ks)
    print(f"{len(correction)} layers; effective dimension per layer {dof:,.0f} of {cells:,} cells ({dof / cells:.0%})")
    print("\n| k | cells kept per layer | share of the effective dimension in the top k × k block |\n|---|---|---|")
    for k, share in shares.items():
        print(f"| {k} | {k * k:,} | {share:.3f} |")


if __name__ == "__main__":
    main()
