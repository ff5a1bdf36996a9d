"""Checksums and plausibility checks of artefacts: a damaged file stops the run, naming it.

A file overwritten in place (a disk error, a bad copy, a stray write) keeps its size and often its
structure, so safetensors and parquet read it without complaint and the run finishes with wrong
numbers. Every artefact therefore records a SHA-256 of its data when written (safetensors: in its
metadata; parquet: in its schema metadata), and loading recomputes it. SHA-256 because it is in the
standard library and hardware-accelerated on current CPUs (~0.3 s per 100 MB here); data are hashed
in 16 MB slices of the arrays already in memory, so nothing is copied or read twice.

The value checks are a second line for files whose checksum is right but whose numbers are not
(written by a broken computation): factors and preconditioned queries must be finite, and the
eigenvalues of the covariances and of Λ non-negative and below `PLAUSIBLE_MAX`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch

from . import names

CHUNK = 1 << 24  # bytes hashed per update: bounded slices, no copies
ALGORITHM = "sha256"
# Largest plausible mean second moment (activations², output-gradient², Λ): LLM activations reach
# ~1e4, so their squares ~1e8, and Λ of a 2,048-token sequence ~1e11; a random byte pattern read
# as float32 lands anywhere up to 3e38 (the damaged Λ held 3.3e31).
PLAUSIBLE_MAX = 1e20
NEGATIVE_TOLERANCE = 1e-6  # eigenvalues of a PSD matrix computed in float64: ≥ -1e-6 · the largest


class DamagedArtefact(ValueError):
    """An artefact whose data do not match its checksum, or whose values are impossible."""


def damaged(path, what: str) -> DamagedArtefact:
    return DamagedArtefact(
        f"{path} is damaged: {what}. Delete it and rerun (Snakemake then rewrites it and everything after it)."
    )


def _update(digest, buffer: memoryview) -> None:
    for start in range(0, len(buffer), CHUNK):
        digest.update(buffer[start : start + CHUNK])


def digest_arrays(arrays: Iterable[tuple[str, np.ndarray]]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every array, in name order."""
    digest = hashlib.new(ALGORITHM)
    for name, array in sorted(arrays, key=lambda item: item[0]):
        digest.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        _update(digest, memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
    return f"{ALGORITHM}:{digest.hexdigest()}"


def digest_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """`digest_arrays` of tensors seen as raw bytes (so bfloat16 needs no numpy dtype)."""

    def raw(t: torch.Tensor) -> np.ndarray:
        flat = t.detach().cpu().contiguous().reshape(-1)
        return flat.view(torch.uint8).numpy() if flat.numel() else np.zeros(0, np.uint8)

    return digest_arrays((f"{k}|{t.dtype}|{tuple(t.shape)}", raw(t)) for k, t in tensors.items())


def digest_frame(frame: pd.DataFrame) -> str:
    """SHA-256 over a table's column names, dtypes and per-row value hashes (pandas' vectorised hashing)."""
    arrays = []
    for position, column in enumerate(frame.columns):
        values = frame[column]
        try:
            # categorize=False: factorising first is 5x slower on unique strings (seq_ids)
            hashed = pd.util.hash_pandas_object(values, index=False, categorize=False).to_numpy()
        except TypeError:  # unhashable cells (lists, dicts): hash their text
            hashed = pd.util.hash_pandas_object(values.astype(str), index=False, categorize=False).to_numpy()
        arrays.append((f"{position:06d}|{column}|{values.dtype}", hashed))
    return digest_arrays(arrays)


def verify(path, recorded: str | None, actual: str) -> None:
    if recorded is None:
        raise damaged(
            path, "it records no checksum (written by an older version of the workflow, or its metadata was lost)"
        )
    if recorded != actual:
        raise damaged(path, f"its data do not match the checksum recorded when it was written ({recorded[:23]}…)")


def check_values(path, kind: str, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Finite values everywhere; for factor files, eigenvalues ≥ 0 (within rounding) and ≤ PLAUSIBLE_MAX."""
    for key, tensor in tensors.items():
        # min and max propagate NaN and show ±Inf: one pass, ~20x faster than isfinite().all()
        if tensor.is_floating_point() and tensor.numel() and not all(map(math.isfinite, _extremes(tensor))):
            module, factor = key.rsplit(".", 1)
            raise damaged(path, f"{factor} of layer {module} has NaN or Inf values")
    if kind == names.KIND_EIGEN:
        _check_spectra(path, {k: t for k, t in tensors.items() if k.endswith("_eigenvalues")}, 1)
    elif kind == names.KIND_COVARIANCE:  # diagonals of Σ a aᵀ bound the eigenvalues from below and above
        _check_spectra(path, {k: torch.diagonal(t) for k, t in tensors.items()}, metadata.get(names.META_TOKENS, 0))
    elif kind == names.KIND_CORRECTION:
        _check_spectra(path, tensors, metadata.get(names.META_SEQUENCES, 0))


def _extremes(tensor: torch.Tensor) -> tuple[float, float]:
    low, high = torch.aminmax(tensor.detach())
    return float(low), float(high)


def _check_spectra(path, values: dict[str, torch.Tensor], count: int) -> None:
    """Eigenvalue-like values (sums over `count` items when count > 1) must be ≥ 0 and plausible as means."""
    for key, tensor in values.items():
        if tensor.numel() == 0:
            continue
        low, high = (v / max(count, 1) for v in _extremes(tensor))
        module, factor = key.rsplit(".", 1)
        if high > PLAUSIBLE_MAX:
            raise damaged(
                path, f"{factor} of layer {module} reaches {high:.3g}, beyond any plausible {PLAUSIBLE_MAX:g}"
            )
        if low < -NEGATIVE_TOLERANCE * max(abs(high), 1e-30):
            raise damaged(path, f"{factor} of layer {module} has a negative eigenvalue {low:.3g}")
