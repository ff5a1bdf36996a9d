"""Helpers the rule scripts share: loading the prepared model and drawing batches."""

from __future__ import annotations

from .engine import estimators
from .engine.model import fingerprint, load_model, select_layers
from .engine.precondition import Damping, Preconditioned, precondition_queries
from .engine.refine import Refine, refine_queries
from .engine.sequences import TokenStore, fitting_sample, shard_bounds


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
    start, stop = shard_bounds(len(batches), shard_index, n_shards)
    return start, batches[start:stop]


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
    *,
    estimator: str,
    damping: Damping,
    rank: int | None,
    refine: dict | None = None,
    corpus_dir=None,
    logger=None,
    **curvature,
) -> Preconditioned:
    """Any scoring estimator's preconditioned queries; `curvature` = io.load_curvature's keywords.

    ekfac_cg draws its refinement sequences from `corpus_dir` as the factors' fitting sample is drawn
    (`refine` = the rule's refine params: scoring.refine, its `fitting` sample and `fisher`), with the
    covariance's label seeds, so with the fitting sample itself F has exactly the factors' labels.
    """
    if not estimators.get(estimator).refines:
        return precondition_queries(
            model, layers, query_ids, batches, estimator=estimator, damping=damping, rank=rank, **curvature
        )
    if not refine or corpus_dir is None:
        raise ValueError(f"estimator {estimator!r} needs the refine settings and the tokenised corpus.")
    _, refinement = fitting_batches(corpus_dir, refine["fitting"])
    return refine_queries(
        model,
        layers,
        query_ids,
        batches,
        refinement,
        curvature.get("eigen"),
        curvature.get("correction"),
        damping,
        Refine.from_settings(refine),
        refine["fisher"],
        refine["fitting"]["seed"],  # the covariance's label seeds, batch by batch
        rank,
        logger=logger,
    )
