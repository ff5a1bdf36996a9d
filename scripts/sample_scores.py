"""Rule sample_scores: a few queries scored over a random corpus sample by every estimator and query rank,
and the sample's TF-IDF ranks; the data of the TF-IDF recall, query batching and estimator figures."""

from pathlib import Path

import pandas as pd
from influence.candidates.tfidf import IdfModel, sample_tfidf_ranks
from influence.engine import artefacts, files
from influence.engine.api import precondition
from influence.engine.data import query_batches
from influence.engine.model import load_tokenizer
from influence.engine.precondition import Damping
from influence.engine.scores import score_many, scores_table
from influence.engine.sequences import TokenStore, fitting_sample, ordered_batches
from influence.inputs.queries import english_originals_first, load_queries
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model, refinement_for

smk = snakemake  # noqa: F821 (injected by Snakemake)
settings = smk.params.analysis


with rule_log(smk.log[0], "sample_scores", **smk.params) as (log, stats):
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    queries = english_originals_first(load_queries(smk.input.queries), settings["n_queries"])
    batches = query_batches(load_tokenizer(smk.input.model), queries)
    curvature = artefacts.load_curvature({k: smk.input[k] for k in smk.input.keys()}, digest)
    store = TokenStore(Path(smk.input.sequences).parent)
    sample = fitting_sample(store.table.index.tolist(), settings["sample_size"], settings["seed"])
    order, candidates = ordered_batches(store, sample, smk.params.batch_size)

    def preconditioned(estimator, rank=None):
        return precondition(
            model,
            layers,
            [q.id for q in queries],
            batches,
            estimator=estimator,
            damping=Damping(**smk.params.damping),
            rank=rank,
            refinement=refinement_for(estimator, smk.params.refine, Path(smk.input.sequences).parent),
            logger=log,
            **curvature,
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
    files.write_table(pd.concat(tables, ignore_index=True), smk.output.scores)
    texts = {q.id: q.text for q in queries}
    ranks = sample_tfidf_ranks(IdfModel.load(smk.input.idf), texts, order, store.table.loc[order, "text"].tolist())
    files.write_table(ranks, smk.output.tfidf)
    stats.update(describe_model(model, layers), queries=len(queries), sample=len(order), variants=len(tables))
