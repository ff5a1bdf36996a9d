"""Every estimator's scores of a small corpus against every query, in memory: the evaluation's scorer.

Influence estimators (every `scoring` row of the registry `engine.estimators`: EK-FAC, EK-FAC + CG, EK-FAC +
ASTRA, unit-normalised EK-FAC, K-FAC, identity = gradient dot, cosine = gradient cosine, and any added later)
run through the engine: factors fitted on the scored corpus itself (true Fisher; ekfac_cg refines on that corpus
too, with the covariance's labels; ekfac_astra draws its minibatches from it), queries preconditioned at rank r,
one estimator at a time (a real model's preconditioned queries take GBs each), and `ekfac_matched`: EK-FAC at
ekfac_astra's damping. Baselines (the registry's `baseline` rows): RepSim in three representations, TF-IDF, BM25.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..engine.api import Refinement, fit_ekfac, precondition
from ..engine.astra import Astra
from ..engine.data import iter_batches, query_batches
from ..engine.estimators import BASELINES, ESTIMATORS, SCORING_ESTIMATORS
from ..engine.precondition import Damping
from ..engine.refine import Refine
from ..engine.scores import score_many
from .baselines import bm25_scores, repsim_scores, tfidf_scores

# Queries per preconditioning pass: their full-rank gradients (~80M floats each on SmolLM2-135M) are held at once.
QUERY_BATCH = 2


def influence_scores(
    model, layers, tokenizer, queries, sequences: list[list[int]], settings: dict, logger=None
) -> dict:
    """{estimator: (Q, N) scores} for the engine's estimators and ekfac_matched; settings: batch_size, seed,
    damping, query_rank, refine (scoring.refine, the refinement set being the corpus) and astra (scoring.astra,
    the pool being the corpus); None skips the refining estimator (evaluation.scoring.cg_models). At rank r every
    estimator's queries are kept (small) and scored in one pass over the corpus; at full rank one at a time."""
    batches = list(iter_batches(sequences, settings["batch_size"], tokenizer.pad_token_id or 0))
    ekfac = fit_ekfac(model, layers, batches, "true", settings["seed"])
    q_batches = query_batches(tokenizer, queries, batch_size=QUERY_BATCH)
    ids, out = [q.id for q in queries], {}
    damping = Damping(**settings["damping"])
    astra = settings.get("astra")
    matched = Damping(**astra["damping"]) if astra and astra.get("damping") else damping

    def preconditioned(estimator, refinement=None, at=damping):
        return precondition(
            model,
            layers,
            ids,
            q_batches,
            estimator=estimator,
            damping=at,
            rank=settings["query_rank"],
            refinement=refinement,
            logger=logger,
            **ekfac.curvature(),
        )

    pres = {}
    for estimator in SCORING_ESTIMATORS:
        kind, refinement = ESTIMATORS[estimator].refines, None
        if kind is not None and settings.get({"cg": "refine", "astra": "astra"}[kind]) is None:
            continue  # not scored on this model (evaluation.scoring.cg_models)
        if kind == "cg":  # one CG per 8 queries: one pass over the corpus per step serves them all
            options = Refine.from_settings({"query_chunk": 8, **settings["refine"]})
            refinement = Refinement(batches, options, "true", settings["seed"])  # F has the covariance's labels
        elif kind == "astra":  # minibatches of the scored corpus, exact Gauss-Newton products
            refinement = Refinement(batches, Astra.from_settings(astra), seed=astra["seed"], damping=matched)
        pres[estimator] = preconditioned(estimator, refinement)
        if settings["query_rank"] is None:  # a real model's full-rank queries take GBs per estimator: score now
            out[estimator] = _scores(model, layers, {estimator: pres.pop(estimator)}, batches)[estimator]
    if matched != damping:  # EK-FAC at the refinement's damping; else the same numbers as ekfac
        pres["ekfac_matched"] = preconditioned("ekfac", at=matched)
    out.update(_scores(model, layers, pres, batches))
    if "ekfac_matched" not in out:
        out["ekfac_matched"] = out["ekfac"]
    return out


def _scores(model, layers, pres: dict, batches) -> dict:
    """{label: (Q, N) float64 scores} of every preconditioned query set, in one pass over `batches`."""
    return {label: s.total.T.double().numpy() for label, s in score_many(model, layers, pres, batches).items()}


def baseline_scores(model, tokenizer, queries, texts: list[str], sequences: list[list[int]], batch_size: int) -> dict:
    """{repsim, repsim_mean, repsim_middle, tfidf, bm25: (Q, N) scores}; every baseline sees the query's prompt
    and completion."""
    query_texts = [q.text for q in queries]
    q_ids = [tokenizer(q.text, add_special_tokens=True).input_ids for q in queries]
    pad = tokenizer.pad_token_id or 0
    out = repsim_scores(
        model, list(iter_batches(q_ids, batch_size, pad)), list(iter_batches(sequences, batch_size, pad))
    )
    out.update({"tfidf": tfidf_scores(texts, query_texts), "bm25": bm25_scores(texts, query_texts)})
    missing = set(BASELINES) - set(out)
    if missing:
        raise NotImplementedError(f"the registry's baselines {sorted(missing)} have no scorer in attribution.py.")
    return {name: out[name] for name in BASELINES}


def scores_long(scores: dict[str, np.ndarray], query_ids: list[str], seq_ids: list[str]) -> pd.DataFrame:
    """Long table estimator, query_id, seq_id, score from {estimator: (Q, N)}."""
    parts = []
    for estimator, matrix in scores.items():
        if not np.isfinite(matrix).all():
            raise FloatingPointError(f"estimator {estimator} produced NaN or Inf scores.")
        parts.append(
            pd.DataFrame(
                {
                    "estimator": estimator,
                    "query_id": np.repeat(query_ids, len(seq_ids)),
                    "seq_id": np.tile(seq_ids, len(query_ids)),
                    "score": matrix.reshape(-1),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def score_matrix(table: pd.DataFrame, estimator: str, query_ids: list[str], seq_ids: list[str]) -> np.ndarray:
    """(Q, N) scores of one estimator from the long table, in the given orders."""
    wide = table[table["estimator"] == estimator].pivot(index="query_id", columns="seq_id", values="score")
    missing = set(query_ids) - set(wide.index) or set(seq_ids) - set(wide.columns)
    if missing:
        raise ValueError(f"the scores of {estimator} lack {sorted(missing)[:3]}.")
    return wide.loc[query_ids, seq_ids].to_numpy()
