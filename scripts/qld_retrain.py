"""Rule qld_retrain: the evaluation's model retrained without each method's top-k documents per query (and
random ones)."""

import numpy as np
import pandas as pd
import torch
from influence.engine import files
from influence.engine.model import load_tokenizer
from influence.evaluation.attribution import score_matrix
from influence.evaluation.planted_hard import filler_fact_id
from influence.evaluation.qld import RANDOM, plan_retrains, qld_values, random_sets, top_k_sets
from influence.evaluation.retrain import cached_retrains
from influence.evaluation.training import encode_texts, retrain_shape, retrainer
from influence.inputs.queries import load_queries
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
torch.set_num_threads(smk.threads)  # 1 for the tiny model: a 32-wide model trains ~30x faster on one thread
with rule_log(smk.log[0], "qld_retrain", seed=smk.wildcards.seed, model=smk.wildcards.model, **smk.params) as (
    log,
    stats,
):
    r, settings, seed = smk.params.retrain, smk.params.qld, int(smk.wildcards.seed)
    tokenizer = load_tokenizer(smk.input.model)
    documents = files.read_table(smk.input.documents)
    queries = [q for q in load_queries(smk.input.queries) if q.tags["variant"] in settings["variants"]]
    if r["qld_facts"] is not None:  # the fine-tuned model: the first n facts' queries only (retrains cost minutes)
        chosen = list(dict.fromkeys(q.tags["fact_id"] for q in queries))[: r["qld_facts"]]
        queries = [q for q in queries if q.tags["fact_id"] in chosen]
    scores = files.read_table(smk.input.scores)
    sequences = encode_texts(tokenizer, documents["text"].tolist(), smk.params.max_tokens)
    seq_ids, query_ids = documents["seq_id"].tolist(), [q.id for q in queries]
    k = settings["k"] if settings["fraction"] is None else max(1, round(settings["fraction"] * len(seq_ids)))
    sets = {(m, 0): top_k_sets(score_matrix(scores, m, query_ids, seq_ids), k) for m in scores["estimator"].unique()}
    controls = random_sets(len(queries), len(seq_ids), k, settings["n_controls"], np.random.default_rng([seed, 2]))
    sets.update({(RANDOM, c): controls[c] for c in range(len(controls))})
    plan = plan_retrains(
        sets,
        [q.tags["fact_id"] for q in queries],
        documents["fact_id"].tolist(),
        settings["max_queries_per_retrain"],
        shared=[filler_fact_id(q.tags["relation"]) for q in queries],
    )
    log.info(
        "%d (method, query) removals of k=%d share %d retrains (%s model)",
        sum(len(p.members) for p in plan),
        k,
        len(plan),
        smk.wildcards.model,
    )
    everything = np.arange(len(seq_ids))
    keeps = [np.setdiff1d(everything, sorted(p.removed)) for p in plan]
    outcomes = cached_retrains(
        keeps,
        retrainer(smk.wildcards.model, tokenizer, sequences, queries, r, seed),
        smk.params.cache,
        {**retrain_shape(r), "max_tokens": smk.params.max_tokens, "documents": seq_ids, "queries": query_ids},
        [f"QLD retrain {i} (removing {len(p.removed)} documents)" for i, p in enumerate(plan)],
        seed,
    )
    rows = [
        (i, method, control, query_ids[q], -float(outcomes[i][q]), len(p.removed), len(p.facts))
        for i, p in enumerate(plan)
        for method, control, q in p.members
    ]
    table = pd.DataFrame(rows, columns=["retrain", "method", "control", "query_id", "loss", "n_removed", "n_queries"])
    files.write_table(table, smk.output.outcomes)
    full = files.read_table(smk.input.accuracy).set_index("query_id")["log_prob"]
    values = qld_values(table, {q: -float(full[q]) for q in query_ids})
    files.write_table(
        values.assign(fact_id=values["query_id"].map({q.id: q.tags["fact_id"] for q in queries}), k=k), smk.output.qld
    )
    stats.update(retrains=len(plan), k=k, queries=len(queries), methods=sorted(scores["estimator"].unique()))
