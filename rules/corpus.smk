CORPUS_PARAMS = {
    "wordnet": config["corpus"]["path"] is None,
    "text_field": config["corpus"]["text_field"],
    "id_field": config["corpus"]["id_field"],
    "split": config["corpus"]["split"],
}


rule tokenize_corpus:
    """Read the corpus (or the WordNet glosses) and tokenise it with the model's tokenizer."""
    input:
        model=f"{MRUN}/model",
        corpus=corpus_source(),
    output:
        tokens=f"{MRUN}/corpus/tokens.npy",
        sequences=f"{MRUN}/corpus/sequences.parquet",
    log:
        f"{MLOGS}/tokenize_corpus.log",
    conda:
        ENV
    resources:
        **CPU_JOB,
    params:
        **CORPUS_PARAMS,
        max_tokens=config["corpus"]["max_tokens"],
    script:
        "../scripts/tokenize_corpus.py"


rule corpus_texts:
    """Model sweep: the corpus text (seq_id, text) once, for the TF-IDF prefilter every model shares."""
    input:
        corpus=corpus_source(),
    output:
        texts=f"{RUN}/corpus/texts.parquet",
    log:
        f"{LOGS}/corpus_texts.log",
    conda:
        ENV
    resources:
        **CPU_JOB,
    params:
        **CORPUS_PARAMS,
    script:
        "../scripts/corpus_texts.py"
