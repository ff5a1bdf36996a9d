"""Rule precondition_queries: every query's completion-loss gradient times (curvature + λ)⁻¹."""

from pathlib import Path

from influence.engine import io, names
from influence.engine.data import query_batches
from influence.engine.model import load_tokenizer
from influence.engine.precondition import Damping
from influence.queries import load_queries
from influence.runlog import describe_model, rule_log
from influence.workflow import load_tracked_model, precondition

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "precondition_queries", **smk.params) as (log, stats):
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    tokenizer = load_tokenizer(smk.input.model)
    queries = load_queries(smk.input.queries)
    batches = query_batches(tokenizer, queries, smk.params.query_batch_size)  # reduced to rank r batch by batch
    eigen = io.load_eigen(smk.input.eigen, digest) if "eigen" in smk.input.keys() else None
    correction = (
        io.load_factor_sums(smk.input.correction, "eigenvalue_correction", digest)
        if "correction" in smk.input.keys()
        else None
    )
    counts = io.read_metadata(smk.input.eigen) if eigen is not None else {}
    per_sequence = counts.get(names.META_TOKENS, 0) / max(counts.get(names.META_SEQUENCES, 0), 1) or None
    pre = precondition(
        model,
        layers,
        [q.id for q in queries],
        batches,
        smk.params.estimator,
        (eigen, correction),
        Damping(**smk.params.damping),
        smk.params.rank,
        smk.params.refine,
        Path(smk.input.sequences).parent if "sequences" in smk.input.keys() else None,
        log,
        per_sequence,
    )
    io.save_preconditioned(smk.output.preconditioned, pre, digest, dict(smk.params))
    stats.update(
        describe_model(model, layers), queries=len(queries), tokens=sum(int(b["attention_mask"].sum()) for b in batches)
    )
