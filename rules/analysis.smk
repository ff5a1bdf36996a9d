# The paper's analyses that follow from one run's scores (issue 3/5 adds the rest).

PAPER_FIGURES = ["sparsity", "top_share", "layer_shares", "cross_lingual", "phrase_order"]
FIGURES = f"{RUN}/figures/{SETTING}"


rule paper_figures:
    """Sparsity, top-k shares, layer-wise shares, cross-lingual transfer and phrase-order flips."""
    input:
        scores=f"{SCORES}/scores.parquet",
        queries=queries_source(),
    output:
        **{
            name: report(
                f"{FIGURES}/{name}.png",
                caption=f"captions/{name}.rst",
                category="Paper figures",
            )
            for name in PAPER_FIGURES
        },
        tables=expand(f"{FIGURES}/{{name}}.parquet", name=PAPER_FIGURES),
        fits=f"{FIGURES}/sparsity_fits.parquet",
        captions=f"{FIGURES}/captions.json",
    params:
        top_k=config["scoring"]["top_n"],
    log:
        f"{LOGS}/{SETTING}/paper_figures.log",
    conda:
        ENV
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=20,
    script:
        "../scripts/paper_figures.py"
