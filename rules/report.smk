rule report:
    """HTML page: each query's top sequences with per-token highlighting, influence and TF-IDF rank; the verdict of
    `snakemake validate` first once it has run for this setting."""
    input:
        unpack(validation_section),
        preflight=ancient(PREFLIGHT_HTML),
        top=f"{SCORES}/top.parquet",
        tokens=f"{SCORES}/tokens.parquet",
        queries=queries_source(),
    output:
        html=report(
            f"{SCORES}/report.html",
            caption="captions/report.rst",
            category="Top influential sequences",
        ),
    log:
        f"{MLOGS}/{{setting}}/report.log",
    conda:
        ENV
    resources:
        **LIGHT_JOB,
    params:
        setting=setting_label,
    script:
        "../scripts/report.py"
