# The paper's analyses: figures from one run's scores, phrase-order probes, and the sample analyses.

PAPER_FIGURES = ["sparsity", "top_share", "layer_shares", "cross_lingual", "query_flip", "phrase_order"]
SAMPLE_FIGURES = ["tfidf_recall", "query_batching", "estimator_agreement"]
FIGURES = f"{MRUN}/figures/{{setting}}"
# The sample analyses depend on the layer set and the damping only, not on the estimator, rank or TF-IDF k.
SAMPLE = f"{MRUN}/analysis/{{setting}}"  # named layers~<set>_damping~<mode>-<value>


rule score_probes:
    """Phrase-order probe sequences generated from the config's templates, scored like corpus candidates."""
    input:
        model=f"{MRUN}/model",
        preconditioned=preconditioned_path,
        queries=queries_source(),
    output:
        probes=f"{SCORES}/probes.parquet",
    log:
        f"{MLOGS}/{{setting}}/score_probes.log",
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        templates=config["probes"],
        max_tokens=config["corpus"]["max_tokens"],
        batch_size=config["scoring"]["batch_size"],
    script:
        "../scripts/score_probes.py"


rule paper_figures:
    """Sparsity, top-k shares, layer-wise shares, cross-lingual transfer, flipped queries and probes."""
    input:
        scores=f"{SCORES}/scores.parquet",
        probes=f"{SCORES}/probes.parquet",
        queries=queries_source(),
        model=f"{MRUN}/model",
        sequences=f"{MRUN}/corpus/sequences.parquet",
    output:
        **figure_outputs(FIGURES, PAPER_FIGURES),
        fits=f"{FIGURES}/sparsity_fits.parquet",
        max_influence=f"{FIGURES}/max_influence.parquet",
        captions=f"{FIGURES}/captions.json",
    log:
        f"{MLOGS}/{{setting}}/paper_figures.log",
    conda:
        ENV
    resources:
        **LIGHT_JOB,
    params:
        top_k=config["scoring"]["top_n"],
        templates=config["probes"],
    script:
        "../scripts/paper_figures.py"


rule sample_scores:
    """A few queries scored exhaustively over a random corpus sample by every estimator and query rank."""
    input:
        unpack(sample_factor_inputs),
        model=f"{MRUN}/model",
        queries=queries_source(),
        sequences=f"{MRUN}/corpus/sequences.parquet",
        tokens=f"{MRUN}/corpus/tokens.npy",
        idf=f"{RUN}/tfidf/idf.safetensors",
    output:
        scores=f"{SAMPLE}/sample_scores.parquet",
        tfidf=f"{SAMPLE}/sample_tfidf.parquet",
    log:
        f"{SAMPLE}/logs/sample_scores.log",
    benchmark:
        f"{SAMPLE}/benchmarks/sample_scores.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        analysis=config["analysis"],
        damping=damping_of,
        batch_size=config["scoring"]["batch_size"],
        refine=sample_refine_params(),
    script:
        "../scripts/sample_scores.py"


rule sample_figures:
    """TF-IDF recall, query batching (rank sweep) and estimator agreement on the corpus sample."""
    input:
        scores=f"{SAMPLE}/sample_scores.parquet",
        tfidf=f"{SAMPLE}/sample_tfidf.parquet",
    output:
        **figure_outputs(SAMPLE, SAMPLE_FIGURES),
        captions=f"{SAMPLE}/captions.json",
    log:
        f"{SAMPLE}/logs/sample_figures.log",
    conda:
        ENV
    resources:
        **LIGHT_JOB,
    params:
        estimator=config["scoring"]["estimator"],
        true_k=config["analysis"]["true_k"],
    script:
        "../scripts/sample_figures.py"
