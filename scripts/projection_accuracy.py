"""Rule projection_accuracy: projected scores for each k against the sample analysis's exact EK-FAC scores."""

from pathlib import Path

import pandas as pd
from influence.candidates import figures as index_figures
from influence.candidates.gradient_index import TFIDF_ROW, accuracy_specs, projection_accuracy
from influence.engine import artefacts, files, names
from influence.engine.api import precondition
from influence.engine.data import query_batches
from influence.engine.index import projected_scores, projector_for
from influence.engine.model import load_tokenizer
from influence.engine.precondition import Damping
from influence.engine.sequences import TokenStore, fitting_sample, ordered_batches
from influence.inputs.queries import english_originals_first, load_queries
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
settings = smk.params.analysis
with rule_log(smk.log[0], "projection_accuracy", **smk.params) as (log, stats):
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    # The sample analysis's queries and sample (rule sample_scores), so the pairs match its exact scores.
    queries = english_originals_first(load_queries(smk.input.queries), settings["n_queries"])
    store = TokenStore(Path(smk.input.sequences).parent)
    sample = fitting_sample(store.table.index.tolist(), settings["sample_size"], settings["seed"])
    order, batches = ordered_batches(store, sample, smk.params.batch_size)
    curvature = artefacts.load_curvature({k: smk.input[k] for k in (names.EIGEN_INPUT, names.CORRECTION_INPUT)}, digest)
    eigen = curvature["eigen"]
    pre = precondition(
        model,
        layers,
        [q.id for q in queries],
        query_batches(load_tokenizer(smk.input.model), queries),
        estimator="ekfac",
        damping=Damping(**smk.params.damping),
        **curvature,
    )
    exact = files.read_table(smk.input.exact)
    exact = exact[(exact["estimator"] == "ekfac") & (exact["query_rank"] == 0)][["query_id", "seq_id", "influence"]]
    # Every k, for each sketch (whitened and plain random at several projection seeds, the factors' top
    # eigenvectors once), from one pass over the sample: what whitening and the eigenbasis buy, and how much of
    # a single random draw is the sketch's noise.
    specs = accuracy_specs(smk.params.projection, smk.params.ks, smk.params.seeds)
    variants = list(specs)
    projectors = [projector_for(spec, layers, eigen=eigen) for spec in specs.values()]
    scores = projected_scores(model, layers, projectors, [p.queries(pre) for p in projectors], batches)
    projected = {
        variant: pd.DataFrame(
            {
                "query_id": [q for _ in order for q in pre.query_ids],
                "seq_id": [s for s in order for _ in pre.query_ids],
                "influence": score.double().numpy().ravel(),  # (N, Q) row-major: sequence, then query
            }
        )
        for variant, score in zip(variants, scores)
    }
    # The TF-IDF prefilter on the same pairs, ranked as tfidf_filter ranks them (ties in corpus order).
    tfidf = files.read_table(smk.input.tfidf)
    projected[TFIDF_ROW] = tfidf.assign(influence=-tfidf["tfidf_rank"])[["query_id", "seq_id", "influence"]]
    table = projection_accuracy(exact, projected, n=smk.params.top_n)
    files.write_table(table, smk.output.tables[0])
    caption = index_figures.plot_projection_accuracy(table, smk.output.projection_accuracy, len(order))
    log.info("caption: %s", caption)
    stats.update(
        describe_model(model, layers),
        queries=len(queries),
        sample=len(order),
        ks=list(smk.params.ks),
        variants=len(variants),
    )
