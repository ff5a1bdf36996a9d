"""Rule precondition_queries: every query's completion-loss gradient times (curvature + λ)⁻¹."""

from pathlib import Path

from influence.engine import artefacts
from influence.engine.api import precondition
from influence.engine.data import query_batches
from influence.engine.model import load_tokenizer
from influence.engine.precondition import Damping
from influence.inputs.queries import load_queries
from influence.run.preflight import check_query_tokens
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model, refinement_for

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "precondition_queries", **smk.params) as (log, stats):
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    tokenizer = load_tokenizer(smk.input.model)
    queries = load_queries(smk.input.queries)
    check_query_tokens(tokenizer, queries, log)  # the preflight's token checks on this run's queries
    try:
        batches = query_batches(tokenizer, queries, smk.params.query_batch_size)  # reduced to rank r batch by batch
    except ValueError as error:  # a query this model's tokenizer cannot measure: name the sweep's model
        name = smk.params.get("model_name")
        raise ValueError(f"model {name!r}: {error}" if name else str(error)) from None
    curvature = artefacts.load_curvature({k: smk.input[k] for k in smk.input.keys()}, digest)
    pre = precondition(
        model,
        layers,
        [q.id for q in queries],
        batches,
        estimator=smk.params.estimator,
        damping=Damping(**smk.params.damping),
        rank=smk.params.rank,
        refinement=refinement_for(  # ekfac_cg: its refinement set is drawn from the corpus like the fitting sample
            smk.params.estimator,
            smk.params.refine,
            Path(smk.input.sequences).parent if "sequences" in smk.input.keys() else None,
        ),
        logger=log,
        **curvature,
    )
    artefacts.save_preconditioned(smk.output.preconditioned, pre, digest, dict(smk.params))
    stats.update(
        describe_model(model, layers), queries=len(queries), tokens=sum(int(b["attention_mask"].sum()) for b in batches)
    )
