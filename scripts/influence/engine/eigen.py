"""Eigendecomposition of the Kronecker factors A and S."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from . import names
from .containers import FactorSums

FACTOR_EIGEN = {
    names.ACTIVATION_COVARIANCE: (names.ACTIVATION_EIGENVALUES, names.ACTIVATION_EIGENVECTORS),
    names.GRADIENT_COVARIANCE: (names.GRADIENT_EIGENVALUES, names.GRADIENT_EIGENVECTORS),
}


EIGEN_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def symmetric_eigh(
    matrix: torch.Tensor, what: str, device: torch.device | None = None, dtype: str = "float64"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) in `dtype` after symmetrising, computed on `device`."""
    matrix = matrix.to(device=device, dtype=EIGEN_DTYPES[dtype])
    if not torch.isfinite(matrix).all():
        raise FloatingPointError(f"{what} has NaN or Inf values; refit the covariance.")
    return torch.linalg.eigh((matrix + matrix.T) / 2)


def eigendecompose(
    covariance: FactorSums,
    progress: bool = True,
    device: torch.device | None = None,
    dtype: str = "float64",
) -> dict[str, dict[str, torch.Tensor]]:
    """{module: {eigenvalues/eigenvectors of A and S}} from the covariance sums.

    Decomposed in `dtype` (float64 by default, like kronfluence's
    `eigendecomposition_dtype`; float32 halves the time of the CPU eigh, the
    docs/performance.md gives its accuracy), returned in the dtype of the sums (float32
    halves the memory of every later stage). Identical matrices
    (gate_proj and up_proj read the same input, so their A sums are bitwise
    equal) are decomposed once and share the result tensors. On a GPU `device`
    only the matrix being decomposed is there; the results come back to the sums' device.
    """
    jobs = [(m, f) for m in covariance.sums for f in FACTOR_EIGEN]
    seen: dict[tuple, list[tuple[torch.Tensor, tuple]]] = {}  # fingerprint -> [(sum, result)]
    eigen: dict[str, dict[str, torch.Tensor]] = {m: {} for m in covariance.sums}
    for module, factor in tqdm(jobs, desc="eigendecomposition", disable=not progress, unit="matrix"):
        total = covariance.sums[module][factor]  # compared as stored: keeping means would copy every matrix
        fingerprint = (tuple(total.shape), float(total.sum()), float(total.flatten()[0]))
        twins = seen.setdefault(fingerprint, [])
        result = next((r for other, r in twins if torch.equal(other, total)), None)
        if result is None:
            matrix = covariance.mean(module, factor)
            result = tuple(
                t.to(dtype=matrix.dtype, device=matrix.device)
                for t in symmetric_eigh(matrix, f"{factor} of {module}", device, dtype)
            )
            twins.append((total, result))
        values_name, vectors_name = FACTOR_EIGEN[factor]
        eigen[module][values_name], eigen[module][vectors_name] = result
    return eigen


def rotations_for(eigen: dict, dtype, devices: dict[str, torch.device]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(Q_A, Q_S) per module in the compute dtype, on that module's device.

    Layers that share an eigenvector tensor (gate_proj and up_proj) keep
    sharing it after the cast, so their rotated inputs are computed once.
    """
    cast: dict[tuple, torch.Tensor] = {}

    def to_compute(t: torch.Tensor, device: torch.device) -> torch.Tensor:
        if (id(t), device) not in cast:
            cast[id(t), device] = t.to(dtype=dtype, device=device)
        return cast[id(t), device]

    return {
        m: (
            to_compute(e[names.ACTIVATION_EIGENVECTORS], devices[m]),
            to_compute(e[names.GRADIENT_EIGENVECTORS], devices[m]),
        )
        for m, e in eigen.items()
        if m in devices
    }
