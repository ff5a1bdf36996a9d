"""A run's settings as sweep points and directory names (key~value). Pure Python: the workflow imports it.

A point is {layers, top_k, estimator, damping, rank}; each artefact's directory holds only the parameters
that change it, so a sweep reuses everything else (docs/architecture.md).
"""

from __future__ import annotations

import itertools

PARAMETERS = ("layers", "top_k", "estimator", "damping", "rank")


def index_name(index: dict) -> str:
    """The gradient index's directory (config `index`): every setting that changes the projected vectors."""
    i = index
    white = "_whitened" if i["whiten"] and i["kind"] != "eigen" else ""  # eigen: never whitened (ProjectionSpec)
    return f"k~{i['k'] or 'full'}_dim~{i['dim'] or 'none'}_{i['kind']}{white}_seed~{i['seed']}_{i['dtype']}_n~{i['max_sequences'] or 'all'}"


def setting_names(point: dict, damping_mode: str, index_candidates: str | None = None) -> dict[str, str]:
    """Directory names of a point's artefacts: preconditioned queries, scores, and the sample analyses.

    With `index_candidates` (`index~<index>_top~<n>`: scoring.candidates is `index`) the scores are named by
    the index's top-n, which they rescore, instead of the TF-IDF k.
    """
    damping = f"damping~{damping_mode}-{point['damping']}"
    layers = f"layers~{point['layers']}"
    queries = f"{layers}_estimator~{point['estimator']}_{damping}_rank~{point['rank'] or 'full'}"
    candidates = index_candidates or f"topk~{point['top_k']}"
    return {"queries": queries, "scores": f"{queries}_{candidates}", "sample": f"{layers}_{damping}"}


def index_candidates(config: dict) -> str | None:
    """The scores' candidate part of their name when they come from the gradient index, else None."""
    if config["scoring"]["candidates"] != "index":
        return None
    return f"index~{index_name(config['index'])}_top~{config['index']['top_n']}"


def sweep_points(config: dict) -> list[dict]:
    """The run's setting first, then every sweep point: one parameter at a time around it, or the full grid.

    Points that name the same scores directory are kept once, in first-seen order.
    """
    sweep, scoring = config["sweep"], config["scoring"]
    base = {
        "layers": config["model"]["layers_name"],
        "top_k": config["tfidf"]["top_k"],
        "estimator": scoring["estimator"],
        "damping": scoring["damping"]["value"],
        "rank": scoring["query_rank"],
    }
    axes = {
        "layers": list(sweep["layers"]),
        "top_k": sweep["tfidf_top_k"],
        "estimator": sweep["estimator"],
        "damping": sweep["damping"],
        "rank": sweep["query_rank"],
    }
    if sweep["grid"]:
        values = [dict.fromkeys([base[key], *axes[key]]) for key in base]
        points = [dict(zip(base, combo)) for combo in itertools.product(*values)]
    else:
        points = [base] + [{**base, key: v} for key, vs in axes.items() for v in vs if v != base[key]]
    mode, candidates = scoring["damping"]["mode"], index_candidates(config)
    return list({setting_names(p, mode, candidates)["scores"]: p for p in points}.values())


# --- The model sweep (sweep.models) -------------------------------------------------------------

# What a sweep model inherits from the run's `model` section when it does not set it itself.
MODEL_KEYS = ("source", "dtype", "layers", "device", "device_map", "trust_remote_code", "layers_name")


def sweep_models(config: dict) -> dict[str, dict]:
    """sweep.models with every key filled in from the run's `model` section (source null: the run's model).

    Names are compared case-insensitively: `Gemma` and `gemma` would be two directories that read as one.
    """
    models, seen = {}, {}
    for name, settings in (config["sweep"].get("models") or {}).items():
        if name.lower() in seen:
            raise ValueError(f"sweep.models names {seen[name.lower()]!r} and {name!r}: two models with one name.")
        seen[name.lower()] = name
        own = {k: v for k, v in (settings or {}).items() if v is not None}
        models[name] = {**{k: config["model"][k] for k in MODEL_KEYS}, **own}
    return models


def duplicate_model_names(text: str) -> list[str]:
    """Names given twice under sweep.models in a YAML document (YAML itself keeps the last one silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    duplicates: list[str] = []

    def mapping(loader, node):
        for key_node, value_node in node.value:  # the sweep section: check the names under its `models`
            if loader.construct_object(key_node) == "models" and isinstance(value_node, yaml.MappingNode):
                names = [loader.construct_object(k) for k, _ in value_node.value]
                duplicates.extend(sorted({n for n in names if names.count(n) > 1}))
        return dict(loader.construct_pairs(node))

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
    return duplicates
