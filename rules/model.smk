rule prepare_model:
    """Load the model once (dequantising a GGUF) and save a plain safetensors checkpoint."""
    input:
        source=model_source_input,
    output:
        model=directory(f"{MRUN}/model"),
    log:
        f"{MLOGS}/prepare_model.log",
    benchmark:
        f"{MBENCH}/prepare_model.tsv"
    conda:
        ENV
    resources:
        **CPU_JOB,
    params:
        **prepare_params(),  # every layer set, checked before any work; source files: a change reruns it
    script:
        "../scripts/prepare_model.py"


rule check_models:
    """Model sweep: every model prepared and every query tokenised by each model's tokenizer, before any
    fitting starts; the model table (parameters, depth) the cross-model figures are drawn against."""
    input:
        models=per_model(f"{MRUN}/model"),
    output:
        table=MODEL_TABLE,
    log:
        f"{LOGS}/check_models.log",
    conda:
        ENV
    resources:
        **LIGHT_JOB,
    params:
        names=list(MODELS),
        layers_name=config["model"]["layers_name"],
        # a path, not an input: a new query file must not rerun this gate (see models_checked in helpers/model_sweep.smk)
        queries=queries_source(),
    script:
        "../scripts/check_models.py"


rule preflight:
    """Correctness checks on the run's own model before any fitting (run/preflight.py): gradients in model.dtype
    against a wider dtype, batch and padding invariance of the attention kernel, padding kept out of the
    factors, no doubled BOS. A failure stops the run naming the setting."""
    input:
        # the prepared model only: Snakemake does not re-examine the jobs below a gate that reruns in the same
        # invocation, so no file users edit (queries, corpus) may rerun it (the queries are checked in
        # precondition_queries)
        model=f"{MRUN}/model",
    output:
        summary=PREFLIGHT,
        table=f"{MRUN}/preflight/checks.parquet",
        html=f"{MRUN}/preflight/checks.html",
    log:
        f"{MLOGS}/preflight.log",
    benchmark:
        f"{MBENCH}/preflight.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        preflight=config["preflight"],
    script:
        "../scripts/preflight.py"
