# Parameter sweeps: `sweep` in config.yaml lists values of the layer set, TF-IDF k, estimator, damping
# and query rank. Each point has its own key~value directories (see setting_names in common.smk), so
# it reuses every artefact that its parameters do not change: a damping sweep never refits factors.


rule sweep_summary:
    """Per sweep point and query: rank correlation and top-n overlap with the run's own setting."""
    input:
        scores=expand(f"{SCORES}/scores.parquet", setting=SWEEP_SETTINGS, allow_missing=True),
    output:
        table=f"{MRUN}/sweep/comparison.parquet",
        summary=f"{MRUN}/sweep/summary.parquet",
        figure=report(f"{MRUN}/sweep/sweep.png", caption="captions/sweep.rst", category="Parameter sweep"),
        caption=f"{MRUN}/sweep/caption.txt",
    log:
        f"{MLOGS}/sweep_summary.log",
    conda:
        ENV
    resources:
        **LIGHT_JOB,
    params:
        settings=SWEEP_SETTINGS,
        points=POINTS,
        top_n=config["scoring"]["top_n"],
    script:
        "../scripts/sweep_summary.py"


# The model sweep (sweep.models): each model's analyses of the run's own setting, against model size.
SCALE = f"{RUN}/scale"
SCALE_FIGURES = [
    "scale_sparsity",
    "scale_cross_lingual",
    "scale_phrase_order",
    "scale_layer_depth",
    "scale_estimator_agreement",
    "scale_query_batching",
]
SCALE_SAMPLE = f"{MRUN}/analysis/{setting_names(POINTS[0])['sample']}"


rule scale_figures:
    """Sparsity, cross-lingual transfer, phrase order, layer depth and the sample analyses per model, by size."""
    input:
        models=MODEL_TABLE,
        fits=per_model(f"{MRUN}/figures/{SETTING}/sparsity_fits.parquet"),
        top_share=per_model(f"{MRUN}/figures/{SETTING}/top_share.parquet"),
        cross_lingual=per_model(f"{MRUN}/figures/{SETTING}/cross_lingual.parquet"),
        phrase_order=per_model(f"{MRUN}/figures/{SETTING}/phrase_order.parquet"),
        layer_shares=per_model(f"{MRUN}/figures/{SETTING}/layer_shares.parquet"),
        estimator_agreement=per_model(f"{SCALE_SAMPLE}/estimator_agreement.parquet"),
        query_batching=per_model(f"{SCALE_SAMPLE}/query_batching.parquet"),
    output:
        **figure_outputs(SCALE, SCALE_FIGURES, category="Scale trends"),
        captions=f"{SCALE}/captions.json",
    log:
        f"{LOGS}/scale_figures.log",
    conda:
        ENV
    resources:
        **LIGHT_JOB,
    params:
        names=list(MODELS),
    script:
        "../scripts/scale_figures.py"
