# The evaluation's counterfactual measures on the tiny model: LDS (retrains on random subsets) and QLD
# (retrains without each method's top-k documents per query). Finished retrains are cached under
# tiny/retrains/ (outside the declared outputs) so a failed or interrupted run resumes.


rule lds_retrain:
    """The tiny model retrained from scratch on random subsets of the corpus; each query's log-probability."""
    input:
        model=f"{EVAL_SEED}/tiny/model",
        documents=rules.planted_corpus.output.documents,
        queries=rules.planted_corpus.output.queries,
    output:
        subsets=f"{EVAL_SEED}/tiny/lds_subsets.parquet",
        outcomes=f"{EVAL_SEED}/tiny/lds_outcomes.parquet",
    log:
        f"{EVAL_SEED}/logs/lds_retrain.log",
    benchmark:
        f"{EVAL_SEED}/benchmarks/lds_retrain.tsv"
    conda:
        ENV
    threads: 1
    resources:
        **CPU_JOB,
    params:
        tiny=EVAL_SETTINGS["tiny"],
        lds=EVAL_SETTINGS["lds"],
        max_tokens=EVAL_SETTINGS["max_tokens"],
        cache=f"{EVAL_SEED}/tiny/retrains/lds",
    script:
        "../scripts/lds_retrain.py"


rule qld_retrain:
    """The tiny model retrained without each method's top-k documents per query, and without k random ones."""
    input:
        model=f"{EVAL_SEED}/tiny/model",
        documents=rules.planted_corpus.output.documents,
        queries=rules.planted_corpus.output.queries,
        scores=f"{EVAL_SEED}/tiny/scores.parquet",
        accuracy=f"{EVAL_SEED}/tiny/accuracy.parquet",
    output:
        outcomes=f"{EVAL_SEED}/tiny/qld_outcomes.parquet",
        qld=f"{EVAL_SEED}/tiny/qld.parquet",
    log:
        f"{EVAL_SEED}/logs/qld_retrain.log",
    benchmark:
        f"{EVAL_SEED}/benchmarks/qld_retrain.tsv"
    conda:
        ENV
    threads: 1
    resources:
        **CPU_JOB,
    params:
        tiny=EVAL_SETTINGS["tiny"],
        qld=qld_settings(),
        max_tokens=EVAL_SETTINGS["max_tokens"],
        cache=f"{EVAL_SEED}/tiny/retrains/qld",
    script:
        "../scripts/qld_retrain.py"
