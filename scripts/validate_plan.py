"""Rule validate_plan: every method's scores over the candidates of a few of the run's queries, each method's top
and bottom k, the pool, the further-trainings to run, and the checkpoint's own log p of each query."""

from pathlib import Path

import pandas as pd
from influence.engine import artefacts, estimators, files
from influence.engine.model import load_tokenizer
from influence.engine.sequences import TokenStore
from influence.evaluation.training import completion_stats
from influence.inputs.queries import load_queries
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model, refinement_for
from influence.validation import plan
from influence.validation.scoring import method_scores

smk = snakemake  # noqa: F821 (injected by Snakemake)
settings = smk.params.validate
with rule_log(smk.log[0], "validate_plan", **smk.params) as (log, stats):
    plan.check_settings(settings, smk.params.estimator)
    methods = plan.methods(settings, smk.params.estimator)
    queries = plan.choose_queries(load_queries(smk.input.queries), settings["n_queries"], settings["seed"])
    corpus_dir = Path(smk.input.sequences).parent
    store = TokenStore(corpus_dir)
    candidates, random_ids = plan.candidate_set(
        files.read_table(smk.input.candidates),
        store.table["seq_id"].tolist(),
        [q.id for q in queries],
        settings["n_random_candidates"],
        settings["seed"],
    )
    plan.check_top_k(settings["top_k"], len(candidates))
    log.info(
        "%d queries, %d candidates (%d random), methods %s", len(queries), len(candidates), len(random_ids), methods
    )
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    tokenizer = load_tokenizer(smk.input.model)
    curvature = artefacts.load_curvature({k: smk.input[k] for k in smk.input.keys()}, digest)
    refining = [m for m in methods if plan.signed(m) and estimators.get(m).refines]
    refinements = {m: refinement_for(m, smk.params.refine, corpus_dir) for m in refining}
    options = dict(
        damping=smk.params.damping,
        rank=smk.params.rank,
        batch_size=smk.params.batch_size,
        seed=settings["seed"],
        refinements=refinements,
        logger=log,
    )
    scores = method_scores(model, layers, tokenizer, queries, store, candidates, curvature, methods, options)
    extremes = plan.extremes(scores, settings["top_k"])
    pool = plan.pool_table(extremes[extremes["kind"] == "proponents"], random_ids)
    schedule, trainings = plan.plan_trainings(extremes, pool, settings)
    log_probs, _ = completion_stats(model, tokenizer, queries)
    files.write_table(scores, smk.output.scores)
    files.write_table(extremes, smk.output.extremes)
    files.write_table(pool, smk.output.pool)
    files.write_table(schedule, smk.output.plan)
    files.write_table(trainings, smk.output.trainings)
    files.write_table(pd.DataFrame({"query_id": [q.id for q in queries], "log_prob": log_probs}), smk.output.base)
    stats.update(
        describe_model(model, layers),
        queries=len(queries),
        candidates=len(candidates),
        pool=len(pool),
        trainings=trainings["training_id"].nunique(),
    )
