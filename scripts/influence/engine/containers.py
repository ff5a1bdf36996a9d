"""The engine's in-memory results that stages hand each other and artefacts store: factor sums and
preconditioned queries. Plain containers: no model, no hooks, so every module may import them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import names


@dataclass
class FactorSums:
    """Partial sums of factors per module, with the counts that normalise them."""

    sums: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # module -> factor -> sum
    n_tokens: int = 0
    n_sequences: int = 0

    def merge(self, other: FactorSums) -> FactorSums:
        """The sums of both jobs, as if one job had seen both shards (a shard that saw no batch adds nothing)."""
        if other.n_sequences == 0 and not other.sums:
            return self
        if self.n_sequences == 0 and not self.sums:
            return other
        if set(self.sums) != set(other.sums):
            raise ValueError("cannot merge factor sums fitted on different module sets.")
        merged = {m: {f: t + other.sums[m][f] for f, t in fs.items()} for m, fs in self.sums.items()}
        return FactorSums(merged, self.n_tokens + other.n_tokens, self.n_sequences + other.n_sequences)

    def mean(self, module: str, factor: str) -> torch.Tensor:
        """Sum divided by its count: tokens for covariances, sequences for Λ."""
        count = self.n_sequences if factor == names.EIGENVALUE_CORRECTION else self.n_tokens
        return self.sums[module][factor] / count

    def check_finite(self) -> None:
        for module, factors in self.sums.items():
            for factor, tensor in factors.items():
                if not torch.isfinite(tensor).all():
                    raise FloatingPointError(f"factor {factor} of {module} has NaN or Inf values.")


@dataclass
class Preconditioned:
    """Preconditioned query gradients per module: {PRECONDITIONED} or {LEFT, RIGHT} (rank r)."""

    query_ids: list[str]
    estimator: str
    rank: int | None
    layers: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    damping: dict[str, float] = field(default_factory=dict)
    # ekfac_cosine: {module: {METRIC_ROTATION_A, METRIC_ROTATION_S, METRIC_DENOMINATOR}}, the candidates' norm metric
    metric: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def is_low_rank(self, module: str) -> bool:
        return names.LEFT in self.layers[module]
