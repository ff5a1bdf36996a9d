"""Helpers the rule scripts share: loading the prepared model and drawing batches."""

from __future__ import annotations

import numpy as np

from .engine import estimators
from .engine.model import fingerprint, load_model, select_layers
from .engine.precondition import Damping, Preconditioned, precondition_queries
from .engine.refine import Refine, refine_queries
from .engine.sequences import TokenStore, fitting_sample


def load_tracked_model(model_dir: str, params) -> tuple:
    """(model, tracked layers, fingerprint) from the prepared checkpoint and the rule's params."""
    model = load_model(
        model_dir, params["dtype"], params["device"], params["trust_remote_code"], params.get("device_map")
    )
    layers = select_layers(model, params["layers"])
    return model, layers, fingerprint(layers)


def fitting_batches(corpus_dir, fitting: dict, shard_index: int = 0, n_shards: int = 1) -> tuple[int, list[dict]]:
    """(index of its first batch, batches) of one shard of the fitting sample's batches.

    The same sample for the covariance and the correction. Batches are formed over the whole
    sample and then split, so the shards' batches are exactly the unsharded run's.
    """
    store = TokenStore(corpus_dir)
    sample = fitting_sample(store.table["seq_id"].tolist(), fitting["n_sequences"], fitting["seed"])
    batches = [batch for _, batch in store.batches(sample, fitting["batch_size"])]
    bounds = np.linspace(0, len(batches), n_shards + 1).round().astype(int)
    return int(bounds[shard_index]), batches[bounds[shard_index] : bounds[shard_index + 1]]


def fitting_settings(params) -> dict:
    """What the factors depend on, recorded in their metadata."""
    return {
        "fitting": dict(params["fitting"]),
        "fisher": params["fisher"],
        "layers": params["layers"],
        "dtype": params["dtype"],
    }


def precondition(
    model,
    layers,
    query_ids: list[str],
    batches: list[dict],
    estimator: str,
    factors: tuple,
    damping: Damping,
    rank: int | None,
    refine: dict | None = None,
    corpus_dir=None,
    logger=None,
    tokens_per_sequence: float | None = None,
) -> Preconditioned:
    """Any scoring estimator's preconditioned queries; `factors` = (eigen, correction).

    ekfac_cg draws its refinement sequences from `corpus_dir` as the factors' fitting sample is drawn
    (`refine` = the rule's refine params: scoring.refine, its `fitting` sample and `fisher`), with the
    covariance's label seeds, so with the fitting sample itself F has exactly the factors' labels.
    """
    eigen, correction = factors
    if not estimators.get(estimator).refines:
        return precondition_queries(
            model,
            layers,
            query_ids,
            batches,
            estimator,
            eigen,
            correction,
            damping,
            rank,
            tokens_per_sequence=tokens_per_sequence,
        )
    if not refine or corpus_dir is None:
        raise ValueError(f"estimator {estimator!r} needs the refine settings and the tokenised corpus.")
    _, refinement = fitting_batches(corpus_dir, refine["fitting"])
    settings = Refine.from_settings(refine)
    return refine_queries(
        model,
        layers,
        query_ids,
        batches,
        refinement,
        eigen,
        correction,
        damping,
        settings,
        refine["fisher"],
        refine["fitting"]["seed"],
        rank,
        logger=logger,
    )
