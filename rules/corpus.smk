rule tokenize_corpus:
    """Read the corpus (or the WordNet glosses) and tokenise it with the model's tokenizer."""
    input:
        model=f"{RUN}/model",
        corpus=corpus_source(),
    output:
        tokens=f"{RUN}/corpus/tokens.npy",
        sequences=f"{RUN}/corpus/sequences.parquet",
    params:
        wordnet=config["corpus"]["path"] is None,
        text_field=config["corpus"]["text_field"],
        id_field=config["corpus"]["id_field"],
        max_tokens=config["corpus"]["max_tokens"],
    log:
        f"{LOGS}/tokenize_corpus.log",
    conda:
        ENV
    resources:
        **CPU_JOB,
    script:
        "../scripts/tokenize_corpus.py"


rule tfidf_filter:
    """Keep each query's top-k candidates by TF-IDF cosine; their union is scored."""
    input:
        sequences=f"{RUN}/corpus/sequences.parquet",
        queries=queries_source(),
    output:
        candidates=f"{RUN}/tfidf/candidates.parquet",
        idf=f"{RUN}/tfidf/idf.safetensors",
    params:
        top_k=config["tfidf"]["top_k"],
        n_features=config["tfidf"]["n_features"],
    log:
        f"{LOGS}/tfidf_filter.log",
    benchmark:
        f"{BENCH}/tfidf_filter.tsv"
    conda:
        ENV
    resources:
        **CPU_JOB,
    script:
        "../scripts/tfidf_filter.py"
