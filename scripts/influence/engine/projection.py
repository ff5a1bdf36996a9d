"""Projections of per-layer gradients, for the compressed gradient index: seeded random, or the factors'
top eigenvectors.

Per tracked layer, two sides R_out (k_out × d_out) and R_in (k_in × d_in) with
independent entries of variance 1/k (Gaussian or Rademacher), so that
E[RᵀR] = I on each side and ⟨R_out P R_inᵀ, R_out G R_inᵀ⟩ is an unbiased
estimate of ⟨P, G⟩ (the two sides are independent). A side whose k reaches
its dimension is not projected at all (the identity), so k ≥ d is exact.

A candidate's projected gradient is formed from its captured tokens without
ever forming G = Σ_t g_t a_tᵀ: R_out G R_inᵀ = (R_out gᵀ)(a R_inᵀ), which
costs B·T·k·(d_out + d_in + k) instead of B·T·d_out·d_in.

Optionally the concatenated layer blocks go through one more projection to
D dims (entries of variance 1/D, also unbiased); it is applied block by
block, so the (D × Σ k_out·k_in) matrix is never stored in one piece.

Matrices are seeded by (seed, layer name, side), never by layer order, so
the index and the queries agree on them whatever else is tracked.

Whitening (`whiten`, the index's default): the candidate side projects
W_S G W_Aᵀ instead of G, with W_S = diag(s + f·s̄)^(-1/2) Q_Sᵀ from the
fitted Kronecker eigenbasis (eigenvalues s of S, mean s̄, f = WHITEN_FLOOR;
likewise A), and the query side projects W_S⁻ᵀ P W_A⁻¹ = diag(s + f·s̄)^(1/2)
Q_Sᵀ P Q_A diag(...)^(1/2). Their inner product has the same expectation
⟨P, G⟩ for any P (every estimator and rank stays unbiased), but the sketch's
noise, ∝ ‖query side‖·‖candidate side‖/k per layer, is far smaller: an EK-FAC
query (P ≈ H⁻¹∇L) lives in the low-curvature directions and a gradient G in
the high-curvature ones, so ‖P‖‖G‖ ≫ ⟨P, G⟩, while whitened both live in one
flat space. Both maps fold into the two k × d matrices of each side, so
building and querying cost what they cost unwhitened. The index then depends
on the factor fit: its fingerprint includes the eigenvalues' digest.

The `eigen` kind (LoGra's PCA initialisation) is not random: each side keeps
the k eigenvectors of its Kronecker factor with the largest eigenvalues,
R_out = Q_S[:, top k]ᵀ and R_in = Q_A[:, top k]ᵀ, so the index holds the
k × k block of every gradient in the Kronecker eigenbasis, and the query side
the same block of P. The score is then exact on that block and drops the
rest: not unbiased, but an EK-FAC score Σ_ij Ĝ_q,ij Ĝ_z,ij / (Λ_ij + λ) gets
little from cells whose curvature is far below the damping, and those are
the low-eigenvalue ones this projection drops (docs/gradient-index.md: projection accuracy).
Whitening would rescale each kept row on both sides by inverse factors,
which cancel, so with `eigen` it is not applied. The seed is unused here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import names
from .containers import Preconditioned

KINDS = ("gaussian", "rademacher", "eigen")  # eigen: the factors' top-k eigenvectors, no randomness
# Whitening scale (s + WHITEN_FLOOR · mean s)^(-1/2) per side: the floor keeps near-zero eigenvalues from
# dominating; 0.3 per side is ≈ the paper's relative damping 0.1 on the Kronecker product s·a (0.3² ≈ 0.1).
WHITEN_FLOOR = 0.3
_SIDES = {"out": 0, "in": 1, "dim": 2}
_EIGEN_OF_SIDE = {  # the Kronecker factor of each side: S (output gradients) for out, A (inputs) for in
    "out": (names.GRADIENT_EIGENVALUES, names.GRADIENT_EIGENVECTORS),
    "in": (names.ACTIVATION_EIGENVALUES, names.ACTIVATION_EIGENVECTORS),
}


@dataclass(frozen=True)
class ProjectionSpec:
    """k rows per side per layer (None: no projection), optional D, the seed and the entry distribution."""

    k: int | None = 16
    dim: int | None = None
    seed: int = 0
    kind: str = "gaussian"
    whiten: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"index projection kind must be one of {KINDS}, got {self.kind!r}.")
        for key in ("k", "dim"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"index.{key} must be a positive integer or null, got {value}.")
        if self.kind == "eigen":  # whitening would cancel: not applied, and not part of the fingerprint
            object.__setattr__(self, "whiten", False)

    @property
    def needs_eigen(self) -> bool:
        """Whether the projection is built from the factors' eigendecomposition (and so belongs to their fit)."""
        return self.whiten or self.kind == "eigen"

    def as_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self, model_fingerprint: str, eigen: dict | None = None) -> str:
        """What an index and its queries must share: the model's tracked layers, the projection and, when
        whitened, the eigenbasis (`eigen`, the factors' eigendecomposition) the whitening comes from."""
        whitening = {"eigen": eigen_digest(required_eigen(eigen, self))} if self.needs_eigen else {}
        text = json.dumps({"model": model_fingerprint, **self.as_dict(), **whitening}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def required_eigen(eigen: dict | None, spec: ProjectionSpec) -> dict:
    """The eigendecomposition a whitened or `eigen` index needs, or a clear error when it was not given."""
    if eigen is None:
        setting = "index.kind is eigen" if spec.kind == "eigen" else "index.whiten is true"
        raise ValueError(
            f"{setting} but no eigendecomposition was given: the index needs the factors' eigen.safetensors "
            "(index.kind gaussian or rademacher with index.whiten: false gives an index independent of the factors)."
        )
    return eigen


def eigen_digest(eigen: dict) -> str:
    """A digest of every layer's A and S eigenvalues: which factor fit a whitened index belongs to."""
    digest = hashlib.sha256()
    for name in sorted(eigen):
        digest.update(name.encode())
        for key in (names.ACTIVATION_EIGENVALUES, names.GRADIENT_EIGENVALUES):
            digest.update(eigen[name][key].detach().cpu().double().numpy().tobytes())
    return digest.hexdigest()[:16]


def _seed(seed: int, layer: str, side: str) -> int:
    words = np.frombuffer(hashlib.sha256(layer.encode()).digest()[:8], dtype=np.uint32)
    return int(np.random.SeedSequence([seed, *words.tolist(), _SIDES[side]]).generate_state(1)[0])


def random_matrix(rows: int, cols: int, seed: int, kind: str) -> torch.Tensor:
    """(rows, cols) float64 with independent entries of mean 0 and variance 1/rows, from a CPU generator
    (the same numbers on every device)."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        matrix = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    else:
        matrix = torch.randint(0, 2, (rows, cols), generator=generator).to(torch.float64) * 2 - 1
    return matrix / rows**0.5


def side_matrix(
    d: int, k: int | None, seed: int, layer: str, side: str, kind: str, values: torch.Tensor | None = None,
    vectors: torch.Tensor | None = None
) -> torch.Tensor | None:  # fmt: skip
    """R of one side (min(k, d), d), or None when k is None or reaches d (that side stays exact); for the
    `eigen` kind, the eigenvectors (columns of `vectors`) of the k largest `values`, as rows."""
    if k is None or k >= d:
        return None
    if kind == "eigen":
        top = torch.argsort(values.double(), descending=True, stable=True)[:k]
        return vectors.double().T[top]
    return random_matrix(k, d, _seed(seed, layer, side), kind)


def check_basis(vectors: torch.Tensor, d: int) -> None:
    if vectors.shape != (d, d):
        raise ValueError(f"the eigenbasis is {tuple(vectors.shape)} but the layer side has dimension {d}; "
                         "the factors belong to another model or layer set.")  # fmt: skip


def whitening_pair(values: torch.Tensor, vectors: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, W⁻ᵀ) of one side, both (d, d) float64: W = diag(v + f·v̄)^(-1/2) Qᵀ and diag(v + f·v̄)^(1/2) Qᵀ,
    so that (W⁻ᵀ)ᵀ W = I. A factor without positive eigenvalues (a layer that never fired) is not whitened."""
    check_basis(vectors, d)
    values = values.double().clamp(min=0)
    scale = values + WHITEN_FLOOR * values.mean()
    if not bool((scale > 0).all()):
        eye = torch.eye(d, dtype=torch.float64)
        return eye, eye
    basis = vectors.double().T  # (d, d): rows are eigenvectors
    return scale.rsqrt()[:, None] * basis, scale.sqrt()[:, None] * basis


class Projector:
    """The projection matrices of every tracked layer, and the maps from gradients to index vectors.

    `shapes` maps each tracked module to its gradient shape (d_out, d_in [+1 bias column]); `eigen` (the
    factors' eigendecomposition) is needed when `spec.whiten`. `out`/`inp` are the candidate side's
    matrices, `query_out`/`query_inp` the query side's (the same ones unless whitened); None is the identity.
    """

    def __init__(
        self, spec: ProjectionSpec, shapes: dict[str, tuple[int, int]], dtype=torch.float32, devices=None, eigen=None
    ):
        self.spec, self.dtype, self.layers = spec, dtype, list(shapes)
        devices = devices or {}
        if spec.needs_eigen:
            eigen = required_eigen(eigen, spec)
            missing = [name for name in shapes if name not in eigen]
            if missing:
                raise ValueError(f"the eigendecomposition lacks the indexed layers {missing[:3]}; refit the factors.")
        self.out: dict[str, torch.Tensor | None] = {}
        self.inp: dict[str, torch.Tensor | None] = {}
        self.query_out: dict[str, torch.Tensor | None] = {}
        self.query_inp: dict[str, torch.Tensor | None] = {}
        self.block: dict[str, tuple[int, int]] = {}
        for name, (d_out, d_in) in shapes.items():
            device = devices.get(name, "cpu")
            sides = {}
            for side, d in (("out", d_out), ("in", d_in)):
                values, vectors = (eigen[name][key] for key in _EIGEN_OF_SIDE[side]) if eigen else (None, None)
                if spec.kind == "eigen":
                    check_basis(vectors, d)
                r = side_matrix(d, spec.k, spec.seed, name, side, spec.kind, values, vectors)
                if spec.whiten:
                    white, inverse = whitening_pair(values, vectors, d)
                    pair = (white, inverse) if r is None else (r @ white, r @ inverse)
                else:
                    pair = (r, r)
                sides[side] = [None if m is None else m.to(dtype=dtype, device=device) for m in pair]
            (self.out[name], self.query_out[name]), (self.inp[name], self.query_inp[name]) = sides["out"], sides["in"]
            self.block[name] = tuple(
                d if m is None else m.shape[0] for d, m in ((d_out, self.out[name]), (d_in, self.inp[name]))
            )
        self.mix: dict[str, torch.Tensor] = {}
        if spec.dim is not None:
            for name, (k_out, k_in) in self.block.items():
                kind = "gaussian" if spec.kind == "eigen" else spec.kind  # the D projection is always random
                mix = random_matrix(spec.dim, k_out * k_in, _seed(spec.seed, name, "dim"), kind)
                self.mix[name] = mix.to(dtype=dtype, device=devices.get(name, "cpu"))  # (D, k_out·k_in)

    @property
    def width(self) -> int:
        """Floats per indexed sequence."""
        return self.spec.dim if self.spec.dim is not None else sum(o * i for o, i in self.block.values())

    def candidates(self, name: str, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(B, k_out·k_in): R_out G R_inᵀ of each sequence's G = Σ_t g_t a_tᵀ, from a (B,T,d_in), g (B,T,d_out)."""
        r_out, r_in = self.out[name], self.inp[name]
        g = g if r_out is None else g @ r_out.T  # (B, T, k_out)
        a = a if r_in is None else a @ r_in.T  # (B, T, k_in)
        return (g.transpose(1, 2) @ a).flatten(1)  # (B, k_out·k_in)

    def matrices(self, name: str, matrix: torch.Tensor, candidate: bool = False) -> torch.Tensor:
        """(Q, k_out·k_in): R_out P R_inᵀ of full-rank (Q, d_out, d_in) query matrices (`candidate`: with the
        candidate side's matrices, as `candidates` maps materialised gradients)."""
        r_out, r_in = (self.out[name], self.inp[name]) if candidate else (self.query_out[name], self.query_inp[name])
        matrix = matrix if r_out is None else r_out @ matrix  # (Q, k_out, d_in)
        matrix = matrix if r_in is None else matrix @ r_in.T  # (Q, k_out, k_in)
        return matrix.flatten(1)

    def factors(self, name: str, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """(Q, k_out·k_in): R_out L Rᵀ R_inᵀ of rank-r factors L (Q, d_out, r), R (Q, d_in, r), never forming L Rᵀ."""
        r_out, r_in = self.query_out[name], self.query_inp[name]
        left = left if r_out is None else r_out @ left  # (Q, k_out, r)
        right = right if r_in is None else r_in @ right  # (Q, k_in, r)
        return (left @ right.transpose(1, 2)).flatten(1)

    def combine(self, blocks: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, width): the layer blocks concatenated in tracked order, or projected to D dims."""
        missing = [name for name in self.layers if name not in blocks]
        if missing:
            raise ValueError(f"no projected gradient for tracked layers {missing[:3]}.")
        if not self.mix:
            return torch.cat([blocks[name] for name in self.layers], dim=1)
        home = blocks[self.layers[0]].device
        return sum((blocks[name] @ self.mix[name].T).to(home) for name in self.layers)  # (N, D)

    def query_blocks(self, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        """{layer: (Q, k_out·k_in)} such that Σ_layers block_z @ query_blocks[layer]ᵀ = combine(blocks_z) @ queriesᵀ
        for queries (Q, width) in this projector's space: their slices, or with a D projection queries @ mix."""
        if self.mix:
            return {name: queries @ self.mix[name].to(queries) for name in self.layers}
        sizes = [o * i for o, i in (self.block[name] for name in self.layers)]
        return dict(zip(self.layers, torch.split(queries, sizes, dim=1)))

    def queries(self, pre: Preconditioned) -> torch.Tensor:
        """(Q, width): preconditioned queries, full rank or rank-r, projected like the candidates."""
        missing = [name for name in self.layers if name not in pre.layers]
        if missing:
            raise ValueError(f"the preconditioned queries lack the indexed layers {missing[:3]}; recompute them.")
        blocks = {}
        for name in self.layers:
            parts = {k: t.to(dtype=self.dtype, device=self._device(name)) for k, t in pre.layers[name].items()}
            if names.LEFT in parts:
                blocks[name] = self.factors(name, parts[names.LEFT], parts[names.RIGHT])
            else:
                blocks[name] = self.matrices(name, parts[names.PRECONDITIONED])
        return self.combine(blocks)

    def _device(self, name: str):
        for tensor in (self.out[name], self.inp[name], self.mix.get(name)):
            if tensor is not None:
                return tensor.device
        return "cpu"
