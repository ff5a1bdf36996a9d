"""Every method's scores of the validation's candidates for its queries: method, query_id, seq_id, score.

Influence estimators run through the engine with the run's own factors, damping and query rank (one estimator per
model pass: full-rank preconditioned queries are large); the baselines are the evaluation's (`attribution.
baseline_scores`: RepSim, TF-IDF and BM25 computed over the candidates themselves); `random` is seeded noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..engine.api import precondition
from ..engine.data import query_batches
from ..engine.precondition import Damping
from ..engine.scores import score_many
from ..evaluation.attribution import QUERY_BATCH, baseline_scores, scores_long
from .plan import RANDOM


def method_scores(
    model, layers, tokenizer, queries, store, candidates: list[str], curvature: dict, methods: list[str], options: dict
) -> pd.DataFrame:
    """Long table method, query_id, seq_id, score over `candidates` (seq_ids of `store`, a TokenStore).

    options: damping (mode, value), rank, batch_size, seed, refinements ({method: Refinement} of the refining
    estimators), logger.
    """
    query_ids = [q.id for q in queries]
    batches = query_batches(tokenizer, queries, QUERY_BATCH)  # full-rank gradients of QUERY_BATCH queries at once
    order, candidate_batches = [], []
    for ids, batch in store.batches(candidates, options["batch_size"]):
        order.extend(ids)
        candidate_batches.append(batch)
    position = {seq_id: i for i, seq_id in enumerate(order)}
    back = np.array([position[s] for s in candidates])  # scores in the batches' order → candidates' order
    out = {}
    for method in methods:
        if method == RANDOM:
            out[method] = np.random.default_rng([options["seed"], 3]).standard_normal((len(queries), len(candidates)))
        elif method in ("tfidf", "bm25") or method.startswith("repsim"):
            continue  # all baselines in one pass below
        else:
            pre = precondition(
                model,
                layers,
                query_ids,
                batches,
                estimator=method,
                damping=Damping(**options["damping"]),
                rank=options["rank"],
                refinement=options.get("refinements", {}).get(method),
                logger=options.get("logger"),
                **curvature,
            )
            scores = score_many(model, layers, {method: pre}, candidate_batches)[method].total  # (N, Q) batch order
            out[method] = scores.T.double().numpy()[:, back]
            del pre
    wanted = [m for m in methods if m not in out]
    if wanted:
        if "text" not in store.table:
            raise ValueError("the tokenised corpus has no text column: the lexical baselines need it.")
        texts = store.table.loc[candidates, "text"].tolist()
        sequences = [store.ids(s) for s in candidates]
        baselines = baseline_scores(model, tokenizer, queries, texts, sequences, options["batch_size"])
        out.update({m: baselines[m] for m in wanted})
    table = scores_long({m: out[m] for m in methods}, query_ids, candidates)
    return table.rename(columns={"estimator": "method"})
