"""A run's settings as sweep points and directory names (key~value). Pure Python: the workflow imports it.

A point is {layers, top_k, estimator, damping, rank}; each artefact's directory holds only the parameters
that change it, so a sweep reuses everything else (DESIGN.md, convention 6).
"""

from __future__ import annotations

import itertools

PARAMETERS = ("layers", "top_k", "estimator", "damping", "rank")


def setting_names(point: dict, damping_mode: str) -> dict[str, str]:
    """Directory names of a point's artefacts: preconditioned queries, scores, and the sample analyses."""
    damping = f"damping~{damping_mode}-{point['damping']}"
    layers = f"layers~{point['layers']}"
    queries = f"{layers}_estimator~{point['estimator']}_{damping}_rank~{point['rank'] or 'full'}"
    return {"queries": queries, "scores": f"{queries}_topk~{point['top_k']}", "sample": f"{layers}_{damping}"}


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
    mode = scoring["damping"]["mode"]
    return list({setting_names(p, mode)["scores"]: p for p in points}.values())
