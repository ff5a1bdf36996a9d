"""The evaluation's measures computed from the evaluation rules' outputs, as rows of one table.

Each function returns rows {difficulty, model, measure, estimator, variant, values, clusters}: `values`
are the per-query numbers and `clusters` each value's `<seed>/<fact_id>` (pooled over seeds by
`pool_seeds`), which `measures.summarise` turns into a mean with a bootstrap interval over facts
(queries about one fact are not independent, and each seed draws its own facts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..stats import bootstrap
from .attribution import score_matrix
from .measures import DIFFERENCE, lds, mrr, recall_at_k

ALL = "all"
# The paired comparisons the issue of refinement asks for: (a, b) gives the per-query a − b, bootstrapped over facts,
# so each answers one question: does refinement help (at EK-FAC's damping, and at its own: ekfac_matched), does the
# unit normalisation, does EK-FAC beat lexical matching.
PAIRS = (
    ("ekfac_astra", "ekfac"),
    ("ekfac_astra", "ekfac_matched"),
    ("ekfac_cg", "ekfac"),
    ("ekfac_cosine", "ekfac"),
    ("ekfac", "bm25"),
    ("ekfac", "tfidf"),
)
PAIRED_MEASURES = ("lds", "qld", "mrr")  # with recall_at_<k>


def mean_spearman(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean over columns (queries) of Spearman's ρ between predicted and actual (M, Q), columns where either
    side is constant left out: `measures.lds` vectorised for the bootstrap over subsets."""
    a, b = rankdata(predicted, axis=0), rankdata(actual, axis=0)  # (M, Q) average ranks
    a, b = a - a.mean(0), b - b.mean(0)
    norm = np.sqrt((a**2).sum(0) * (b**2).sum(0))  # (Q,)
    valid = norm > 0
    return float(((a * b).sum(0)[valid] / norm[valid]).mean()) if valid.any() else float("nan")


def clusters_of(query_ids, facts: dict[str, str], seed: int) -> np.ndarray:
    """Each query's bootstrap cluster: its fact within its seed."""
    return np.array([f"{seed}/{facts[q]}" for q in query_ids])


def ihvp_rows(table: pd.DataFrame, facts: dict[str, str], seed: int, model: str = "tiny") -> list[dict]:
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
                    "clusters": clusters_of(group["query_id"], facts, seed),
                }
            )
    return rows


def lds_rows(
    scores: pd.DataFrame,
    subsets: pd.DataFrame,
    outcomes: pd.DataFrame,
    facts: dict[str, str] | None = None,
    seed: int = 0,
    model: str = "tiny",
) -> list[dict]:
    """Per-query LDS of every estimator in `scores` (estimator, query_id, seq_id, score), and per seed the
    mean LDS with a bootstrap interval over the retraining subsets (variant `seed~<s>`)."""
    query_ids = outcomes["query_id"].drop_duplicates().tolist()
    seq_ids = scores["seq_id"].drop_duplicates().tolist()
    n_subsets = outcomes["subset"].nunique()
    masks = np.zeros((n_subsets, len(seq_ids)))
    position = {s: i for i, s in enumerate(seq_ids)}
    for subset, seq_id in subsets[["subset", "seq_id"]].itertuples(index=False):
        masks[subset, position[seq_id]] = 1.0
    actual = outcomes.pivot(index="subset", columns="query_id", values="log_prob").loc[range(n_subsets), query_ids]
    rows, measured = [], actual.to_numpy()
    for estimator in scores["estimator"].drop_duplicates():
        matrix = score_matrix(scores, estimator, query_ids, seq_ids)
        values = lds(matrix, masks, actual.to_numpy())
        row = {"model": model, "measure": "lds", "estimator": estimator, "variant": ALL, "values": values}
        if facts is not None:
            row["clusters"] = clusters_of(query_ids, facts, seed)
        predicted, measured = masks @ matrix.T, actual.to_numpy()  # (M, Q) each
        low, high = bootstrap(lambda i, p=predicted, a=measured: mean_spearman(p[i], a[i]), n_subsets, seed=seed)
        rows.append(row)
        rows.append({**row, "variant": f"seed~{seed}", "ci": (low, high), "clusters": None})
    return rows


def tracing_rows(
    scores: pd.DataFrame,
    documents: pd.DataFrame,
    variants: dict[str, str],
    facts: dict[str, str],
    model: str,
    k: int,
    seed: int = 0,
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
                chosen_ids = query_ids if variant == ALL else [q for q, v in zip(query_ids, kinds) if v == variant]
                rows.append(
                    {
                        "model": model,
                        "measure": measure,
                        "estimator": estimator,
                        "variant": variant,
                        "values": chosen,
                        "clusters": clusters_of(chosen_ids, facts, seed),
                    }
                )
    return rows


def accuracy_rows(accuracy: pd.DataFrame, model: str, facts: dict[str, str], seed: int = 0) -> list[dict]:
    """Query accuracy (greedy decoding reproduces the completion) per variant and overall."""
    rows = []
    for variant, group in [(ALL, accuracy), *accuracy.groupby("variant", sort=False)]:
        rows.append(
            {
                "model": model,
                "measure": "accuracy",
                "estimator": "model",
                "variant": variant,
                "values": group["correct"].to_numpy(float),
                "clusters": clusters_of(group["query_id"], facts, seed),
            }
        )
    return rows


def qld_rows(qld: pd.DataFrame, seed: int, model: str = "tiny") -> list[dict]:
    """QLD per method (`qld`: loss rise beyond the random controls'; `qld_raw`: beyond the full model's,
    with `random` itself as a row), from a `qld_retrain` table (method, query_id, fact_id, qld, raw)."""
    rows = []
    for method, group in qld.groupby("method", sort=False):
        clusters = np.array([f"{seed}/{f}" for f in group["fact_id"]])
        for measure, column in (("qld", "qld"), ("qld_raw", "raw")):
            if measure == "qld" and method == "random":
                continue  # zero by definition
            rows.append(
                {
                    "model": model,
                    "measure": measure,
                    "estimator": method,
                    "variant": ALL,
                    "values": group[column].to_numpy(float),
                    "clusters": clusters,
                }
            )
    return rows


def paired_rows(rows: list[dict]) -> list[dict]:
    """Per-query differences a − b for each of PAIRS present on the same (difficulty, model, measure, variant),
    measure `difference:<measure>`, estimator `a − b`, clustered by fact like their rows. Values are paired by
    position when both rows list the same queries' clusters in the same order (LDS, recall, MRR), else by fact
    when each fact appears once (QLD); otherwise the pair is skipped."""
    index = {
        (r.get("difficulty"), r["model"], r["measure"], r["estimator"], r["variant"]): r
        for r in rows
        if r.get("clusters") is not None and (r["measure"] in PAIRED_MEASURES or r["measure"].startswith("recall_at_"))
    }
    out = []
    for (difficulty, model, measure, estimator, variant), row in index.items():
        for a, b in PAIRS:
            other = index.get((difficulty, model, measure, b, variant))
            if estimator != a or other is None:
                continue
            mine, theirs = np.asarray(row["values"], float), np.asarray(other["values"], float)
            clusters = np.asarray(row["clusters"])
            if not np.array_equal(clusters, np.asarray(other["clusters"])):
                unique = len(set(clusters)) == len(clusters) == len(set(other["clusters"]))
                if not unique or set(clusters) != set(other["clusters"]):
                    continue
                position = {c: i for i, c in enumerate(other["clusters"])}
                theirs = theirs[[position[c] for c in clusters]]
            out.append(
                {
                    "difficulty": difficulty,
                    "model": model,
                    "measure": DIFFERENCE + measure,
                    "estimator": f"{a} − {b}",
                    "variant": variant,
                    "values": mine - theirs,
                    "clusters": clusters,
                }
            )
    return out


def pool_seeds(rows: list[dict], difficulty: str | None = None) -> list[dict]:
    """Rows with the same (difficulty, model, measure, estimator, variant) from several seeds, their values and
    clusters joined (clusters name the seed, so one fact per seed is one cluster)."""
    pooled: dict[tuple, dict] = {}
    for row in rows:
        row = row if difficulty is None else {**row, "difficulty": difficulty}
        key = (row.get("difficulty"), row["model"], row["measure"], row["estimator"], row["variant"])
        if key in pooled:
            pooled[key]["values"] = np.concatenate([pooled[key]["values"], row["values"]])
            if pooled[key].get("clusters") is not None:
                pooled[key]["clusters"] = np.concatenate([pooled[key]["clusters"], row["clusters"]])
        else:
            pooled[key] = dict(row)
    return list(pooled.values())
