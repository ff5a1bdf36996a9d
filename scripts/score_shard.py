"""Rule score_shard: influence of one shard of the TF-IDF candidates on every query."""

from pathlib import Path

from influence.candidates.tfidf import candidate_union
from influence.engine import artefacts, files
from influence.engine.scores import score_candidates, scores_table
from influence.engine.sequences import TokenStore, ordered_batches, shard
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "score_shard", shard=smk.wildcards.shard, **smk.params) as (log, stats):
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    pre = artefacts.load_preconditioned(smk.input.preconditioned, digest)
    seq_ids = shard(
        candidate_union(files.read_table(smk.input.candidates)), int(smk.wildcards.shard), smk.params.n_shards
    )
    store = TokenStore(Path(smk.input.sequences).parent)
    order, batches = ordered_batches(store, seq_ids, smk.params.batch_size)
    scores = score_candidates(model, layers, pre, batches)
    files.write_table(scores_table(scores, order, pre.query_ids), smk.output.scores)
    stats.update(
        describe_model(model, layers),
        candidates=len(order),
        tokens=int(store.table.loc[order, "n_tokens"].sum()) if order else 0,
    )
