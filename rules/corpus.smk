rule tokenize_corpus:
    """Read the corpus (or the WordNet glosses) and tokenise it with the model's tokenizer."""
    input:
        model=f"{RUN}/model",
        corpus=corpus_source(),
    output:
        tokens=f"{RUN}/corpus/tokens.npy",
        sequences=f"{RUN}/corpus/sequences.parquet",
    log:
        f"{LOGS}/tokenize_corpus.log",
    conda:
        ENV
    resources:
        **CPU_JOB,
    params:
        wordnet=config["corpus"]["path"] is None,
        text_field=config["corpus"]["text_field"],
        id_field=config["corpus"]["id_field"],
        max_tokens=config["corpus"]["max_tokens"],
    script:
        "../scripts/tokenize_corpus.py"
