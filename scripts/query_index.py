"""Rule query_index: each query's top-n indexed sequences by projected score (and the score matrix on request)."""

from pathlib import Path

from influence.candidates.gradient_index import query_index
from influence.engine import artefacts, files, names
from influence.engine.index import corpus_digest
from influence.engine.projection import ProjectionSpec
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "query_index", **smk.params) as (log, stats):
    pre = artefacts.load_preconditioned(smk.input.preconditioned)
    queries_model = files.read_metadata(smk.input.preconditioned)[names.META_MODEL]
    modules = files.read_metadata(smk.input.shards[0])[names.META_MODULES]
    spec = ProjectionSpec(**smk.params.projection)
    eigen = artefacts.load_eigen(smk.input.eigen, queries_model) if spec.needs_eigen else None
    tables = query_index(
        pre,
        queries_model,
        list(smk.input.shards),
        spec,
        modules,
        corpus_digest(Path(smk.input.sequences).parent),
        smk.params.top_n,
        smk.params.search,
        smk.threads,
        smk.params.score_matrix,
        eigen,
    )
    for name, table in tables.items():
        files.write_table(table, smk.output[name])
    stats.update(
        queries=len(pre.query_ids),
        estimator=pre.estimator,
        rank=pre.rank,
        recall_at_n=float(tables["search"]["recall_at_n"].mean()),
    )
