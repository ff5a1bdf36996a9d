"""The steps the rule scripts share: loading the prepared model, drawing the fitting batches and a refining
estimator's refinement set."""

from __future__ import annotations

from ..engine import estimators
from ..engine.api import Refinement
from ..engine.astra import Astra
from ..engine.model import attention_implementation, fingerprint, load_model, select_layers
from ..engine.precondition import Damping
from ..engine.refine import Refine
from ..engine.sequences import TokenStore, fitting_sample, shard_bounds


def load_tracked_model(model_dir: str, params) -> tuple:
    """(model, tracked layers, fingerprint) from the prepared checkpoint and the rule's params."""
    model = load_model(
        model_dir, params["dtype"], params["device"], params["trust_remote_code"], params.get("device_map")
    )
    layers = select_layers(model, params["layers"])
    return model, layers, fingerprint(layers, attention_implementation(model))


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


def refinement_for(estimator: str, refine: dict | None, corpus_dir) -> Refinement | None:
    """The sequences and settings of a refining estimator (None for the others), drawn from `corpus_dir`.

    ekfac_cg draws its refinement sequences as the factors' fitting sample is drawn (`refine` = the rule's
    refine params: scoring.refine, its `fitting` sample and `fisher`), with the covariance's label seeds, so
    with the fitting sample itself F has exactly the factors' labels. ekfac_astra's pool is the whole corpus or
    a seeded sample of scoring.astra.n_sequences (`refine["astra"]`), its minibatches drawn from it step by step.
    """
    kind = estimators.get(estimator).refines
    if kind is None:
        return None
    if not refine or corpus_dir is None or (kind == "astra" and "astra" not in refine):
        raise ValueError(f"estimator {estimator!r} needs its refine settings and the tokenised corpus.")
    if kind == "astra":
        astra = refine["astra"]
        store = TokenStore(corpus_dir)
        pool = fitting_sample(store.table["seq_id"].tolist(), astra["n_sequences"], astra["seed"])
        batches = [batch for _, batch in store.batches(pool, 64)]
        damping = Damping(**astra["damping"]) if astra.get("damping") else None
        return Refinement(batches, Astra.from_settings(astra), seed=astra["seed"], damping=damping)
    _, batches = fitting_batches(corpus_dir, refine["fitting"])
    return Refinement(batches, Refine.from_settings(refine), refine["fisher"], refine["fitting"]["seed"])
