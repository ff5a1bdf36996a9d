rule score_shard:
    """Influence of one shard of the candidates on every query: total and per layer."""
    input:
        model=f"{MRUN}/model",
        preconditioned=preconditioned_path,
        candidates=candidates_path,
        sequences=f"{MRUN}/corpus/sequences.parquet",
        tokens=f"{MRUN}/corpus/tokens.npy",
    output:
        scores=f"{SCORES}/shard_{{shard}}.parquet",
    log:
        f"{MLOGS}/{{setting}}/score_shard_{{shard}}.log",
    benchmark:
        f"{MBENCH}/{{setting}}/score_shard_{{shard}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        n_shards=config["scoring"]["n_shards"],
        batch_size=config["scoring"]["batch_size"],
    script:
        "../scripts/score_shard.py"


rule aggregate_scores:
    """Join the shards with the TF-IDF table; rank candidates per query."""
    input:
        shards=expand(f"{SCORES}/shard_{{shard}}.parquet", shard=SHARDS, allow_missing=True),
        candidates=candidates_path,
    output:
        scores=f"{SCORES}/scores.parquet",
        top=f"{SCORES}/top.parquet",
    log:
        f"{MLOGS}/{{setting}}/aggregate_scores.log",
    conda:
        ENV
    resources:
        **CPU_JOB,
    params:
        top_n=config["scoring"]["top_n"],
    script:
        "../scripts/aggregate_scores.py"


rule token_scores:
    """Per-token influence of each query's top sequences."""
    input:
        model=f"{MRUN}/model",
        preconditioned=preconditioned_path,
        top=f"{SCORES}/top.parquet",
        sequences=f"{MRUN}/corpus/sequences.parquet",
        tokens=f"{MRUN}/corpus/tokens.npy",
    output:
        tokens=f"{SCORES}/tokens.parquet",
    log:
        f"{MLOGS}/{{setting}}/token_scores.log",
    benchmark:
        f"{MBENCH}/{{setting}}/token_scores.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        batch_size=config["scoring"]["batch_size"],
    script:
        "../scripts/token_scores.py"
