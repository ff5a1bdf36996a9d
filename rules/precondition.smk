rule precondition_queries:
    """Each query's completion-loss gradient times (curvature + λ)⁻¹, rank-r if configured."""
    input:
        unpack(factor_inputs),
        model=f"{MRUN}/model",
        queries=queries_source(),
        preflight=ancient(PREFLIGHT),
    output:
        preconditioned=f"{QUERIES}/preconditioned.safetensors",
    log:
        f"{MLOGS}/{{setting}}/precondition_queries.log",
    benchmark:
        f"{MBENCH}/{{setting}}/precondition_queries.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        **model_label(),
        estimator=setting_value("estimator"),
        damping=damping_of,
        rank=setting_value("rank"),
        query_batch_size=config["scoring"]["query_batch_size"],
        refine=refine_params,
    script:
        "../scripts/precondition_queries.py"
