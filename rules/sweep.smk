# Parameter sweeps: `sweep` in config.yaml lists values of the layer set, TF-IDF k, estimator, damping
# and query rank. Each point has its own key~value directories (see setting_names in common.smk), so
# it reuses every artefact that its parameters do not change: a damping sweep never refits factors.


rule sweep_summary:
    """Per sweep point and query: rank correlation and top-n overlap with the run's own setting."""
    input:
        scores=expand(f"{SCORES}/scores.parquet", setting=SWEEP_SETTINGS),
    output:
        table=f"{RUN}/sweep/comparison.parquet",
        summary=f"{RUN}/sweep/summary.parquet",
        figure=report(f"{RUN}/sweep/sweep.png", caption="captions/sweep.rst", category="Parameter sweep"),
        caption=f"{RUN}/sweep/caption.txt",
    log:
        f"{LOGS}/sweep_summary.log",
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
