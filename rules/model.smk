rule prepare_model:
    """Load the model once (dequantising a GGUF) and save a plain safetensors checkpoint."""
    input:
        source=model_source(),
    output:
        model=directory(f"{RUN}/model"),
    log:
        f"{LOGS}/prepare_model.log",
    benchmark:
        f"{BENCH}/prepare_model.tsv"
    conda:
        ENV
    resources:
        **CPU_JOB,
    params:
        **{**model_params(), "layers": LAYER_SETS},  # every layer set, checked before any work
        source_files=source_files(model_source()),  # weights changed in place rerun this rule
    script:
        "../scripts/prepare_model.py"
