"""Rule sample_scores: a few queries scored over a random corpus sample by every estimator and query rank,
and the sample's TF-IDF ranks; the data of the TF-IDF recall, query batching and estimator figures."""

from pathlib import Path

import numpy as np
import pandas as pd
from influence.engine import io, names
from influence.engine.data import query_batches
from influence.engine.model import load_tokenizer
from influence.engine.precondition import Damping
from influence.engine.scores import score_many, scores_table
from influence.engine.sequences import TokenStore, fitting_sample, ordered_batches
from influence.queries import english_originals_first, load_queries
from influence.runlog import describe_model, rule_log
from influence.tfidf import IdfModel, tfidf_matrix
from influence.workflow import load_tracked_model, precondition

smk = snakemake  # noqa: F821 (injected by Snakemake)
settings = smk.params.analysis


def tfidf_ranks(idf, texts: dict[str, str], order: list[str], store: TokenStore) -> pd.DataFrame:
    """Each query's TF-IDF rank (1 = most similar) of every sampled sequence, under the run's IDF."""
    docs = tfidf_matrix(store.table.loc[order, "text"].tolist(), idf)
    similarity = (tfidf_matrix(list(texts.values()), idf) @ docs.T).toarray()  # (Q, N)
    rows = []
    for query_id, sims in zip(texts, similarity):
        ranks = np.empty(len(order), dtype=np.int64)
        ranks[np.lexsort((np.arange(len(order)), -sims))] = np.arange(1, len(order) + 1)  # ties: sample order
        rows.append(pd.DataFrame({"query_id": query_id, "seq_id": order, "tfidf": sims, "tfidf_rank": ranks}))
    return pd.concat(rows, ignore_index=True)


with rule_log(smk.log[0], "sample_scores", **smk.params) as (log, stats):
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    queries = english_originals_first(load_queries(smk.input.queries), settings["n_queries"])
    batches = query_batches(load_tokenizer(smk.input.model), queries)
    eigen = io.load_eigen(smk.input.eigen, digest)
    correction = io.load_factor_sums(smk.input.correction, names.EIGENVALUE_CORRECTION, digest)
    store = TokenStore(Path(smk.input.sequences).parent)
    sample = fitting_sample(store.table.index.tolist(), settings["sample_size"], settings["seed"])
    order, candidates = ordered_batches(store, sample, smk.params.batch_size)

    def preconditioned(estimator, rank=None):
        ids, damping = [q.id for q in queries], Damping(**smk.params.damping)
        corpus = Path(smk.input.sequences).parent
        return precondition(
            model, layers, ids, batches, estimator, (eigen, correction), damping, rank, smk.params.refine, corpus, log
        )

    tables = []
    for estimator in settings["estimators"]:  # one model pass each: full-rank variants are large
        variants = {(estimator, 0): preconditioned(estimator)}
        if estimator == "ekfac":  # the rank sweep rides along with full-rank EK-FAC
            variants.update({("ekfac", r): preconditioned("ekfac", r) for r in settings["ranks"]})
        for (name, rank), scores in score_many(model, layers, variants, candidates).items():
            table = scores_table(scores, order, [q.id for q in queries])[["query_id", "seq_id", "influence"]]
            tables.append(table.assign(estimator=name, query_rank=rank))
        del variants
    pd.concat(tables, ignore_index=True).to_parquet(smk.output.scores, index=False)
    tfidf_ranks(IdfModel.load(smk.input.idf), {q.id: q.text for q in queries}, order, store).to_parquet(
        smk.output.tfidf, index=False
    )
    stats.update(describe_model(model, layers), queries=len(queries), sample=len(order), variants=len(tables))
