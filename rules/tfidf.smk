rule fit_idf:
    """Document frequencies of hashed word features over the whole corpus (streamed in chunks)."""
    input:
        sequences=f"{TEXTS}",
    output:
        idf=f"{RUN}/tfidf/idf.safetensors",
    log:
        f"{LOGS}/fit_idf.log",
    benchmark:
        f"{BENCH}/fit_idf.tsv"
    conda:
        ENV
    resources:
        **CPU_JOB,
    params:
        n_features=config["tfidf"]["n_features"],
    script:
        "../scripts/fit_idf.py"


rule tfidf_filter:
    """Keep each query's top-k candidates by TF-IDF cosine; their union is scored."""
    input:
        sequences=f"{TEXTS}",
        idf=f"{RUN}/tfidf/idf.safetensors",
        queries=queries_source(),
    output:
        candidates=f"{RUN}/tfidf/top_k~{{top_k}}/candidates.parquet",
    log:
        f"{LOGS}/tfidf_filter_top_k~{{top_k}}.log",
    benchmark:
        f"{BENCH}/tfidf_filter_top_k~{{top_k}}.tsv"
    conda:
        ENV
    resources:
        **CPU_JOB,
    script:
        "../scripts/tfidf_filter.py"
