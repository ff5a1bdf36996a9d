"""Rule build_index: one shard of the compressed gradient index (projected per-layer candidate gradients)."""

from pathlib import Path

from influence.candidates.gradient_index import build_shard, indexed_sequences
from influence.engine import artefacts
from influence.engine.index import DTYPES, corpus_digest, save_shard
from influence.engine.projection import ProjectionSpec
from influence.engine.sequences import TokenStore
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "build_index", shard=smk.wildcards.shard, **smk.params) as (log, stats):
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    spec = ProjectionSpec(**smk.params.projection)
    eigen = (
        artefacts.load_eigen(smk.input.eigen, digest) if spec.needs_eigen else None
    )  # the factors the index is built from
    corpus_dir = Path(smk.input.sequences).parent
    store = TokenStore(corpus_dir)
    ids = indexed_sequences(store, smk.params.max_sequences, spec.seed)
    index, n_shards = int(smk.wildcards.shard), smk.params.n_shards
    order, vectors, norms = build_shard(
        model, layers, spec, store, ids, index, n_shards, smk.params.batch_size, eigen=eigen
    )
    save_shard(
        smk.output.shard,
        vectors.to(DTYPES[smk.params.index_dtype]),
        norms,
        order,
        spec,
        digest,
        eigen,
        corpus_digest=corpus_digest(corpus_dir),
        modules=list(layers),
        shard=index,
        n_shards=n_shards,
        n_indexed=len(ids),
    )
    stats.update(
        describe_model(model, layers),
        sequences=len(order),
        tokens=int(store.table.loc[order, "n_tokens"].sum()) if order else 0,
        floats_per_sequence=vectors.shape[1],
    )
