"""Helpers the rule scripts share: loading the prepared model and drawing batches."""

from __future__ import annotations

from .model import fingerprint, load_model, select_layers
from .sequences import TokenStore, fitting_sample


def load_tracked_model(model_dir: str, params) -> tuple:
    """(model, tracked layers, fingerprint) from the prepared checkpoint and the rule's params."""
    model = load_model(model_dir, params["dtype"], params["device"], params["trust_remote_code"])
    layers = select_layers(model, params["layers"])
    return model, layers, fingerprint(layers)


def fitting_batches(corpus_dir, fitting: dict) -> list[dict]:
    """The fitting sample's batches: the same sample for the covariance and the correction."""
    store = TokenStore(corpus_dir)
    sample = fitting_sample(store.table["seq_id"].tolist(), fitting["n_sequences"], fitting["seed"])
    return [batch for _, batch in store.batches(sample, fitting["batch_size"])]


def fitting_settings(params) -> dict:
    """What the factors depend on, recorded in their metadata."""
    return {"fitting": dict(params["fitting"]), "fisher": params["fisher"], "layers": params["layers"],
            "dtype": params["dtype"]}
