# The evaluation's counterfactual measures: LDS (retrains on random subsets) and QLD (retrains without each
# method's top-k documents per query), on the tiny model (retrained from scratch) and on the fine-tuned one
# (fine-tuned again from the base checkpoint; counts in evaluation.finetune.retrains). Finished retrains are
# cached under <model>/retrains/ (outside the declared outputs) so a failed or interrupted run resumes.


rule lds_retrain:
    """The model retrained on random subsets of the corpus; each query's log-probability."""
    input:
        unpack(retrain_inputs),
        documents=rules.planted_corpus.output.documents,
        queries=rules.planted_corpus.output.queries,
    output:
        subsets=f"{EVAL_SEED}/{{model}}/lds_subsets.parquet",
        outcomes=f"{EVAL_SEED}/{{model}}/lds_outcomes.parquet",
    log:
        f"{EVAL_SEED}/logs/lds_retrain_{{model}}.log",
    benchmark:
        f"{EVAL_SEED}/benchmarks/lds_retrain_{{model}}.tsv"
    conda:
        ENV
    threads: retrain_threads
    resources:
        **RETRAIN_JOB,
    params:
        retrain=retrain_settings,
        lds=EVAL_SETTINGS["lds"],
        max_tokens=EVAL_SETTINGS["max_tokens"],
        cache=f"{EVAL_SEED}/{{model}}/retrains/lds",
    script:
        "../scripts/lds_retrain.py"


rule qld_retrain:
    """The model retrained without each method's top-k documents per query, and without k random ones."""
    input:
        unpack(retrain_inputs),
        documents=rules.planted_corpus.output.documents,
        queries=rules.planted_corpus.output.queries,
        scores=f"{EVAL_SEED}/{{model}}/scores.parquet",
        accuracy=f"{EVAL_SEED}/{{model}}/accuracy.parquet",
    output:
        outcomes=f"{EVAL_SEED}/{{model}}/qld_outcomes.parquet",
        qld=f"{EVAL_SEED}/{{model}}/qld.parquet",
    log:
        f"{EVAL_SEED}/logs/qld_retrain_{{model}}.log",
    benchmark:
        f"{EVAL_SEED}/benchmarks/qld_retrain_{{model}}.tsv"
    conda:
        ENV
    threads: retrain_threads
    resources:
        **RETRAIN_JOB,
    params:
        retrain=retrain_settings,
        qld=qld_settings(),
        max_tokens=EVAL_SETTINGS["max_tokens"],
        cache=f"{EVAL_SEED}/{{model}}/retrains/qld",
    script:
        "../scripts/qld_retrain.py"
