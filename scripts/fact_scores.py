"""Rule fact_scores: every estimator's scores of the planted corpus for every query, and query accuracy."""

import pandas as pd
from influence.engine import files
from influence.engine.model import load_tokenizer
from influence.evaluation.attribution import baseline_scores, influence_scores, scores_long
from influence.evaluation.training import completion_stats, encode_texts
from influence.inputs.queries import load_queries
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "fact_scores", model=smk.wildcards.model, seed=smk.wildcards.seed, **smk.params) as (
    log,
    stats,
):
    model, layers, _ = load_tracked_model(smk.input.model, smk.params)
    tokenizer = load_tokenizer(smk.input.model)
    documents = files.read_table(smk.input.documents)
    queries = load_queries(smk.input.queries)
    texts = documents["text"].tolist()
    sequences = encode_texts(tokenizer, texts, smk.params.max_tokens)
    settings = {**smk.params.scoring, "seed": int(smk.wildcards.seed)}
    scores = influence_scores(model, layers, tokenizer, queries, sequences, settings, log)
    scores.update(baseline_scores(model, tokenizer, queries, texts, sequences, settings["batch_size"]))
    files.write_table(scores_long(scores, [q.id for q in queries], documents["seq_id"].tolist()), smk.output.scores)
    log_probs, correct = completion_stats(model, tokenizer, queries)
    accuracy = pd.DataFrame(
        {
            "query_id": [q.id for q in queries],
            "variant": [q.tags.get("variant") for q in queries],
            "log_prob": log_probs,
            "correct": correct,
        }
    )
    files.write_table(accuracy, smk.output.accuracy)
    stats.update(
        describe_model(model, layers), documents=len(texts), queries=len(queries), accuracy=float(correct.mean())
    )
