"""QLD, the counterfactual measure: retrain without a method's top-k proponents of a query, see the loss rise.

For a query q and a method m, R_m(q) are the k documents m scores highest for q. The model is
retrained (same initialisation, recipe and seed) without R_m(q), and the query loss
−log p(completion | prompt) is measured. QLD_m(q) = loss(without R_m(q)) − mean_c loss(without C_c(q)),
where C_1..C_n are k random documents each (the random controls): how much more the method's chosen
documents carry the answer than random ones. Its counterpart with the full corpus as reference is
kept too (`raw`, as bergson reports it).

Retrains are shared (`plan_retrains`): one retrain removes the union of several (method or control,
query) removal sets when no two of its queries ask about the same fact, the sets do not overlap,
and no removed document belongs to another member's fact (documents carry the fact they were
generated for), with at most `max_per_retrain` queries each; methods that choose the very same
documents for a query share its retrain. Each member's query is measured on its own
retrain only. Pure numpy/pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

RANDOM = "random"  # the name of the random controls in the tables (control c is `random` with control = c)


def top_k_sets(scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) indices of each query's k highest scores (ties broken by document order, stable)."""
    scores = np.asarray(scores, float)
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"evaluation.qld.k is {k}; the corpus has {scores.shape[1]} documents.")
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def random_sets(n_queries: int, n_documents: int, k: int, n_controls: int, rng: np.random.Generator) -> np.ndarray:
    """(n_controls, Q, k) random removal sets (without replacement within a set)."""
    return np.array(
        [[rng.choice(n_documents, size=k, replace=False) for _ in range(n_queries)] for _ in range(n_controls)]
    ).reshape(n_controls, n_queries, k)


@dataclass
class Retrain:
    """One retrain: the documents it leaves out and the (method, control, query index) it measures."""

    removed: set[int] = field(default_factory=set)
    members: list[tuple[str, int, int]] = field(default_factory=list)
    facts: set[str] = field(default_factory=set)  # facts of the member queries
    depends: set[str] = field(default_factory=set)  # facts the member queries depend on (theirs and `shared`)
    removed_facts: set[str] = field(default_factory=set)  # facts the removed documents were generated for
    sets: list[set[int]] = field(default_factory=list)  # each member's own removal set


def plan_retrains(
    sets: dict[tuple[str, int], np.ndarray],
    query_facts: list[str],
    document_facts: list[str],
    max_per_retrain: int,
    shared: list[str] | None = None,
) -> list[Retrain]:
    """Greedy first-fit packing of every (method, control) × query removal set into shared retrains.

    sets: {(method, control): (Q, k) document indices}; control is 0 for a method, c for random control c.
    shared: per query, one more document fact it depends on (None: its own fact only).
    """
    if max_per_retrain < 1:
        raise ValueError(f"evaluation.qld.max_queries_per_retrain must be >= 1, got {max_per_retrain}.")
    retrains: list[Retrain] = []
    for (method, control), chosen in sets.items():
        for q, row in enumerate(np.asarray(chosen)):
            removed = {int(i) for i in row}
            own = {document_facts[i] for i in removed}
            fact = query_facts[q]
            depends = {fact} | ({shared[q]} if shared is not None else set())
            same = [r for r in retrains if any(m[2] == q and r.sets[i] == removed for i, m in enumerate(r.members))]
            if same:  # another method chose the very same documents for this query: its retrain measures both
                same[0].members.append((method, control, q))
                same[0].sets.append(removed)
                continue
            for r in retrains:
                if (
                    len(r.facts) < max_per_retrain
                    and fact not in r.facts
                    and not depends & r.removed_facts
                    and not removed & r.removed
                    and not own & r.depends
                ):
                    break
            else:
                r = Retrain()
                retrains.append(r)
            r.removed |= removed
            r.members.append((method, control, q))
            r.sets.append(removed)
            r.facts.add(fact)
            r.depends |= depends
            r.removed_facts |= own
    return retrains


def qld_values(outcomes: pd.DataFrame, full_loss: dict[str, float]) -> pd.DataFrame:
    """Per (method, query): `qld` (loss without the method's top-k minus the mean loss without the random
    controls' sets) and `raw` (minus the full model's loss). outcomes: method, control, query_id, loss."""
    random = outcomes[outcomes["method"] == RANDOM].groupby("query_id")["loss"].mean()
    methods = outcomes[outcomes["method"] != RANDOM]
    rows = []
    for (method, query_id), group in methods.groupby(["method", "query_id"], sort=False):
        loss = float(group["loss"].mean())
        rows.append(
            {
                "method": method,
                "query_id": query_id,
                "loss": loss,
                "qld": loss - float(random[query_id]),
                "raw": loss - full_loss[query_id],
            }
        )
    for query_id, loss in random.items():
        rows.append(
            {"method": RANDOM, "query_id": query_id, "loss": loss, "qld": 0.0, "raw": loss - full_loss[query_id]}
        )
    return pd.DataFrame(rows, columns=["method", "query_id", "loss", "qld", "raw"])
