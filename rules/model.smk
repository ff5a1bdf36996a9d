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
