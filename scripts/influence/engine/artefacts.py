"""Typed artefacts: factor sums, eigendecompositions and preconditioned queries, as safetensors files.

Written and read through `files.py` (atomic, checksummed, kind and fingerprint checked).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from . import names
from .containers import FactorSums, Preconditioned
from .files import load_tensors, read_metadata, save_tensors


def _split(tensors: dict[str, torch.Tensor], modules: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {m: {} for m in modules}
    for key, tensor in tensors.items():
        module, factor = key.rsplit(".", 1)
        out[module][factor] = tensor
    return out


def _flat(per_module: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {names.key(m, f): t for m, fs in per_module.items() for f, t in fs.items()}


def save_factor_sums(path, sums: FactorSums, kind: str, fingerprint: str, settings: dict) -> None:
    """Covariance or eigenvalue-correction partial sums with their counts."""
    save_tensors(
        path,
        _flat(sums.sums),
        **{
            names.META_KIND: kind,
            names.META_MODEL: fingerprint,
            names.META_MODULES: list(sums.sums),
            names.META_TOKENS: sums.n_tokens,
            names.META_SEQUENCES: sums.n_sequences,
            names.META_SETTINGS: settings,
        },
    )


def load_factor_sums(path, kind: str, fingerprint: str | None = None) -> FactorSums:
    tensors, meta = load_tensors(path, kind, fingerprint)
    return FactorSums(_split(tensors, meta[names.META_MODULES]), meta[names.META_TOKENS], meta[names.META_SEQUENCES])


def save_eigen(path, eigen: dict, fingerprint: str, settings: dict, n_tokens: int = 0, n_sequences: int = 0) -> None:
    """Eigendecompositions, with the covariance's counts (K-FAC's n̄ = n_tokens / n_sequences)."""
    save_tensors(
        path,
        _flat(eigen),
        **{
            names.META_KIND: names.KIND_EIGEN,
            names.META_MODEL: fingerprint,
            names.META_MODULES: list(eigen),
            names.META_SETTINGS: settings,
            names.META_TOKENS: n_tokens,
            names.META_SEQUENCES: n_sequences,
        },
    )


def load_eigen(path, fingerprint: str | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Eigendecompositions; identical activation eigenvectors are shared again after loading."""
    tensors, meta = load_tensors(path, names.KIND_EIGEN, fingerprint)
    eigen = _split(tensors, meta[names.META_MODULES])
    seen: list[torch.Tensor] = []
    for factors in eigen.values():
        for name in (names.ACTIVATION_EIGENVECTORS, names.ACTIVATION_EIGENVALUES):
            twin = next((t for t in seen if t.shape == factors[name].shape and torch.equal(t, factors[name])), None)
            if twin is None:
                seen.append(factors[name])
            else:
                factors[name] = twin
    return eigen


def load_curvature(inputs: Mapping[str, str], fingerprint: str | None = None) -> dict:
    """The factors a preconditioning rule's inputs name, as `precondition_queries` keywords.

    `inputs` maps names.EIGEN_INPUT / names.CORRECTION_INPUT to files (what the estimator's registry row
    asks for; either may be absent). Returns {eigen, correction, tokens_per_sequence}, None where absent;
    tokens_per_sequence (K-FAC's n̄) comes from the eigendecomposition's counts.
    """
    eigen = load_eigen(inputs[names.EIGEN_INPUT], fingerprint) if names.EIGEN_INPUT in inputs else None
    correction = None
    if names.CORRECTION_INPUT in inputs:
        correction = load_factor_sums(inputs[names.CORRECTION_INPUT], names.KIND_CORRECTION, fingerprint)
    per_sequence = None
    if eigen is not None:
        counts = read_metadata(inputs[names.EIGEN_INPUT])
        per_sequence = counts.get(names.META_TOKENS, 0) / max(counts.get(names.META_SEQUENCES, 0), 1) or None
    return {"eigen": eigen, "correction": correction, "tokens_per_sequence": per_sequence}


def save_preconditioned(path, pre: Preconditioned, fingerprint: str, settings: dict) -> None:
    tensors = _flat(pre.layers)
    tensors.update({names.key(m, names.DAMPING): torch.tensor(v) for m, v in pre.damping.items()})
    tensors.update(_flat(pre.metric))
    save_tensors(
        path,
        tensors,
        **{
            names.META_KIND: names.KIND_PRECONDITIONED,
            names.META_MODEL: fingerprint,
            names.META_MODULES: list(pre.layers),
            names.META_SETTINGS: settings,
            "query_ids": pre.query_ids,
            "estimator": pre.estimator,
            "rank": pre.rank,
        },
    )


def load_preconditioned(path, fingerprint: str | None = None) -> Preconditioned:
    tensors, meta = load_tensors(path, names.KIND_PRECONDITIONED, fingerprint)
    layers = _split(tensors, meta[names.META_MODULES])
    damping = {m: float(f.pop(names.DAMPING)) for m, f in layers.items() if names.DAMPING in f}
    metric_keys = (names.METRIC_ROTATION_A, names.METRIC_ROTATION_S, names.METRIC_DENOMINATOR)
    metric = {m: {k: f.pop(k) for k in metric_keys} for m, f in layers.items() if names.METRIC_DENOMINATOR in f}
    return Preconditioned(meta["query_ids"], meta["estimator"], meta["rank"], layers, damping, metric)
