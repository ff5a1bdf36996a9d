rule precondition_queries:
    """Each query's completion-loss gradient times (curvature + λ)⁻¹, rank-r if configured."""
    input:
        unpack(factor_inputs),
        model=f"{RUN}/model",
        queries=queries_source(),
    output:
        preconditioned=f"{QUERIES}/preconditioned.safetensors",
    params:
        estimator=config["scoring"]["estimator"],
        damping=config["scoring"]["damping"],
        rank=config["scoring"]["query_rank"],
        **model_params(),
    log:
        f"{LOGS}/{SETTING}/precondition_queries.log",
    benchmark:
        f"{BENCH}/{SETTING}/precondition_queries.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    script:
        "../scripts/precondition_queries.py"
