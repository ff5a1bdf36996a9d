"""The one registry of estimators: what each needs, how it preconditions, and how it is drawn.

Adding an estimator means adding a row here and its implementation; the workflow (`rules/common.smk`
imports `ESTIMATORS`), the schema enums (tested against `SCORING_ESTIMATORS`), the sample analyses, the
evaluation and the figures read it from here.

Scopes:
  scoring     the engine preconditions queries with it: usable as `scoring.estimator`, in sweeps, the
              sample analyses and the evaluation;
  baseline    scores computed outside the engine (evaluation only): representation and lexical similarity;
  reference   the evaluation's diagnostics: iHVP-accuracy references (never a winner) and EK-FAC at the
              refinement's damping (ekfac_matched), scored as an influence method.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import names


@dataclass(frozen=True)
class Estimator:
    """One row of the registry."""

    name: str
    label: str  # display name in figures and tables
    colour: str  # matplotlib colour, fixed so an estimator looks the same in every figure
    scope: str = "scoring"  # scoring | baseline | reference
    factors: tuple[str, ...] = ()  # factor inputs it needs: names.EIGEN_INPUT, names.CORRECTION_INPUT
    curvature: str | None = None  # eigenvalues in the Kronecker eigenbasis: "ekfac" (fitted Λ) or "kfac"
    # divide query and candidate gradients by their norms: Euclidean (cosine) or, with a curvature, in its inverse's
    # metric, ‖(G + λ)^{-1/2} g‖ (ekfac_cosine: ⟨H⁻¹q, g⟩ / (‖H^{-1/2}q‖ ‖H^{-1/2}g‖), TrackStar's unit normalisation)
    unit_norm: bool = False
    # refines EK-FAC's solution on corpus sequences (needs the tokenised corpus): "cg" (ekfac_cg, refine.py: CG on the
    # Fisher of a fitting-like sample) or "astra" (ekfac_astra, astra.py: stochastic steps on corpus minibatches)
    refines: str | None = None

    @property
    def needs_factors(self) -> bool:
        return bool(self.factors)


_ROWS = (
    Estimator("ekfac", "EK-FAC", "C0", factors=(names.EIGEN_INPUT, names.CORRECTION_INPUT), curvature="ekfac"),
    Estimator(
        "ekfac_cg",
        "EK-FAC + CG",
        "C9",
        factors=(names.EIGEN_INPUT, names.CORRECTION_INPUT),
        curvature="ekfac",
        refines="cg",
    ),
    Estimator(
        "ekfac_astra",
        "EK-FAC + ASTRA",
        "darkred",
        factors=(names.EIGEN_INPUT, names.CORRECTION_INPUT),
        curvature="ekfac",
        refines="astra",
    ),
    Estimator(
        "ekfac_cosine",
        "EK-FAC (unit-normalised)",
        "navy",
        factors=(names.EIGEN_INPUT, names.CORRECTION_INPUT),
        curvature="ekfac",
        unit_norm=True,
    ),
    Estimator("kfac", "K-FAC", "C1", factors=(names.EIGEN_INPUT,), curvature="kfac"),
    Estimator("identity", "gradient dot", "C2"),
    Estimator("cosine", "gradient cosine", "C3", unit_norm=True),
    Estimator("lissa", "LiSSA", "C4", scope="reference"),
    # EK-FAC at ekfac_astra's damping (scoring.astra.damping), so a gain of refinement is told from one of damping
    Estimator(
        "ekfac_matched",
        "EK-FAC at ASTRA's damping",
        "slateblue",
        scope="reference",
        factors=(names.EIGEN_INPUT, names.CORRECTION_INPUT),
        curvature="ekfac",
    ),
    Estimator("repsim", "RepSim", "C5", scope="baseline"),  # Li et al.: last layer, last token
    Estimator("repsim_mean", "RepSim (mean-pooled)", "teal", scope="baseline"),  # last layer, mean over tokens
    Estimator("repsim_middle", "RepSim (middle layer)", "olive", scope="baseline"),  # middle layer, last token
    Estimator("tfidf", "TF-IDF", "C6", scope="baseline"),
    Estimator("bm25", "BM25", "C7", scope="baseline"),
    Estimator("block_exact", "exact per-layer block", "C8", scope="reference"),
)
ESTIMATORS: dict[str, Estimator] = {row.name: row for row in _ROWS}
SCORING_ESTIMATORS: tuple[str, ...] = tuple(e.name for e in _ROWS if e.scope == "scoring")
BASELINES: tuple[str, ...] = tuple(e.name for e in _ROWS if e.scope == "baseline")
ORDER: tuple[str, ...] = tuple(ESTIMATORS)  # the order of rows and legends everywhere


def get(name: str) -> Estimator:
    """The registry row of a scoring estimator, or a ValueError listing the ones that exist."""
    if name not in ESTIMATORS or ESTIMATORS[name].scope != "scoring":
        raise ValueError(f"estimator must be one of {SCORING_ESTIMATORS}, got {name!r}.")
    return ESTIMATORS[name]


def factor_inputs(name: str) -> tuple[str, ...]:
    """The factor inputs (names.EIGEN_INPUT, names.CORRECTION_INPUT) a scoring estimator needs."""
    return get(name).factors


def sort_key(name: str) -> tuple[int, str]:
    """Registry order first, unknown names last (alphabetically)."""
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def colour(name: str) -> str:
    return ESTIMATORS[name].colour if name in ESTIMATORS else "grey"
