"""The evaluation's measures computed from the evaluation rules' outputs, as rows of one table.

Each function returns rows {model, measure, estimator, variant, values}: `values` are the per-query
numbers (pooled over seeds by the caller), which `evaluation.summarise` turns into a mean with a
Student-t interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .attribution import score_matrix
from .measures import lds, mrr, recall_at_k

ALL = "all"


def ihvp_rows(table: pd.DataFrame, model: str = "tiny") -> list[dict]:
    """Spearman ρ and relative error against the exact influence, per Fisher, damping and estimator."""
    rows = []
    for (fisher, damping, estimator), group in table.groupby(["fisher", "damping", "estimator"], sort=True):
        for measure in ("spearman", "relative_error"):
            rows.append(
                {
                    "model": model,
                    "measure": measure,
                    "estimator": estimator,
                    "variant": f"{fisher}_fisher/damping~{damping:g}",
                    "values": group[measure].to_numpy(),
                }
            )
    return rows


def lds_rows(scores: pd.DataFrame, subsets: pd.DataFrame, outcomes: pd.DataFrame, model: str = "tiny") -> list[dict]:
    """Per-query LDS of every estimator in `scores` (estimator, query_id, seq_id, score)."""
    query_ids = outcomes["query_id"].drop_duplicates().tolist()
    seq_ids = scores["seq_id"].drop_duplicates().tolist()
    n_subsets = outcomes["subset"].nunique()
    masks = np.zeros((n_subsets, len(seq_ids)))
    position = {s: i for i, s in enumerate(seq_ids)}
    for subset, seq_id in subsets[["subset", "seq_id"]].itertuples(index=False):
        masks[subset, position[seq_id]] = 1.0
    actual = outcomes.pivot(index="subset", columns="query_id", values="log_prob").loc[range(n_subsets), query_ids]
    rows = []
    for estimator in scores["estimator"].drop_duplicates():
        values = lds(score_matrix(scores, estimator, query_ids, seq_ids), masks, actual.to_numpy())
        rows.append({"model": model, "measure": "lds", "estimator": estimator, "variant": ALL, "values": values})
    return rows


def tracing_rows(
    scores: pd.DataFrame, documents: pd.DataFrame, variants: dict[str, str], facts: dict[str, str], model: str, k: int
) -> list[dict]:
    """recall@k and MRR of each query's planted documents, per estimator and query variant (and all).

    `variants` and `facts` map query_id to its variant and fact_id.
    """
    query_ids, seq_ids = list(variants), documents["seq_id"].tolist()
    planted = documents["role"].to_numpy() == "planted"
    relevant = np.array([planted & (documents["fact_id"].to_numpy() == facts[q]) for q in query_ids])  # (Q, N)
    kinds = np.array([variants[q] for q in query_ids])
    rows = []
    for estimator in scores["estimator"].drop_duplicates():
        matrix = score_matrix(scores, estimator, query_ids, seq_ids)
        measures = {f"recall_at_{k}": recall_at_k(matrix, relevant, k), "mrr": mrr(matrix, relevant)}
        for measure, values in measures.items():
            for variant in [ALL, *dict.fromkeys(kinds)]:
                chosen = values if variant == ALL else values[kinds == variant]
                rows.append(
                    {"model": model, "measure": measure, "estimator": estimator, "variant": variant, "values": chosen}
                )
    return rows


def accuracy_rows(accuracy: pd.DataFrame, model: str) -> list[dict]:
    """Query accuracy (greedy decoding reproduces the completion) per variant and overall."""
    rows = [
        {
            "model": model,
            "measure": "accuracy",
            "estimator": "model",
            "variant": ALL,
            "values": accuracy["correct"].to_numpy(float),
        }
    ]
    for variant, group in accuracy.groupby("variant", sort=False):
        rows.append(
            {
                "model": model,
                "measure": "accuracy",
                "estimator": "model",
                "variant": variant,
                "values": group["correct"].to_numpy(float),
            }
        )
    return rows


def pool_seeds(rows: list[dict]) -> list[dict]:
    """Rows with the same (model, measure, estimator, variant) from several seeds, their values joined."""
    pooled: dict[tuple, dict] = {}
    for row in rows:
        key = (row["model"], row["measure"], row["estimator"], row["variant"])
        if key in pooled:
            pooled[key]["values"] = np.concatenate([pooled[key]["values"], row["values"]])
        else:
            pooled[key] = dict(row)
    return list(pooled.values())
