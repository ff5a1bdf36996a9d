# The compressed gradient index: projected candidate gradients built once per model, layer set and projection,
# searched by every query setting (estimator, damping, rank) without another pass over the corpus.


include: "helpers/index.smk"  # this stage's paths and settings


rule build_index:
    """One shard of the index: each sequence's per-layer gradient projected to k x k, from one forward and backward pass."""
    input:
        unpack(index_eigen),
        model=f"{MRUN}/model",
        sequences=f"{MRUN}/corpus/sequences.parquet",
        tokens=f"{MRUN}/corpus/tokens.npy",
    output:
        shard=f"{INDEX_ROOT}/layers~{{layers}}/shard_{{shard}}.safetensors",
    log:
        f"{MLOGS}/index/layers~{{layers}}/build_index_{{shard}}.log",
    benchmark:
        f"{MBENCH}/index/layers~{{layers}}/build_index_{{shard}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        projection=index_projection(),
        index_dtype=config["index"]["dtype"],
        n_shards=config["index"]["n_shards"],
        max_sequences=config["index"]["max_sequences"],
        batch_size=config["index"]["batch_size"],
    script:
        "../scripts/build_index.py"


rule query_index:
    """Project the preconditioned queries like the index and return each query's top-n indexed sequences."""
    input:
        unpack(index_eigen),
        preconditioned=preconditioned_path,
        shards=index_shards,
        sequences=f"{MRUN}/corpus/sequences.parquet",
        tokens=f"{MRUN}/corpus/tokens.npy",
    output:
        **index_query_outputs(),
        top=f"{INDEX_QUERY}/top.parquet",
        candidates=f"{INDEX_QUERY}/candidates.parquet",
        search=f"{INDEX_QUERY}/search.parquet",
    log:
        f"{MLOGS}/index/{{setting}}/query_index.log",
    conda:
        ENV
    threads: THREADS
    resources:
        **CPU_JOB,
    params:
        projection=index_projection(),
        top_n=config["index"]["top_n"],
        search=config["index"]["search"],
        score_matrix=config["index"]["score_matrix"],
    script:
        "../scripts/query_index.py"


rule index_figures:
    """Recall of the TF-IDF top-k against the index's top-n over every indexed sequence, as k grows."""
    input:
        top=f"{INDEX_QUERY}/top.parquet",
        shards=index_shards,
        sequences=f"{MRUN}/corpus/sequences.parquet",
        idf=f"{RUN}/tfidf/idf.safetensors",
        queries=queries_source(),
    output:
        **figure_outputs(INDEX_QUERY, INDEX_FIGURES, category="Gradient index"),
    log:
        f"{MLOGS}/index/{{setting}}/index_figures.log",
    conda:
        ENV
    resources:
        **CPU_JOB,
    script:
        "../scripts/index_figures.py"


rule projection_accuracy:
    """Projected against exact full-rank EK-FAC scores on the sample analysis, for each k of index.accuracy_ks and
    each sketch (random whitened and plain, the factors' top eigenvectors), beside the TF-IDF prefilter."""
    input:
        unpack(sample_factor_inputs),
        exact=f"{SAMPLE}/sample_scores.parquet",
        tfidf=f"{SAMPLE}/sample_tfidf.parquet",
        model=f"{MRUN}/model",
        queries=queries_source(),
        sequences=f"{MRUN}/corpus/sequences.parquet",
        tokens=f"{MRUN}/corpus/tokens.npy",
    output:
        **figure_outputs(INDEX_QUERY, ACCURACY_FIGURES, category="Gradient index"),
    log:
        f"{MLOGS}/index/{{setting}}/projection_accuracy.log",
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        projection=index_projection(),
        ks=config["index"]["accuracy_ks"],
        seeds=config["index"]["accuracy_seeds"],
        top_n=config["index"]["top_n"],
        analysis=config["analysis"],
        damping=damping_of,
        batch_size=config["scoring"]["batch_size"],
    script:
        "../scripts/projection_accuracy.py"


rule index:
    """Target: the index, the run's queries searched against it, and both index figures."""
    input:
        **index_targets(),
