# Factor paths depend only on the model, the fitting data, the layers and the label sampling.


rule fit_covariance:
    """Sum a aᵀ and g gᵀ per tracked layer over one shard of the fitting sample."""
    input:
        model=f"{RUN}/model",
        sequences=f"{RUN}/corpus/sequences.parquet",
        tokens=f"{RUN}/corpus/tokens.npy",
    output:
        covariance=f"{RUN}/factors/covariance/shard_{{part}}.safetensors",
    params:
        fitting=config["fitting"],
        fisher=FISHER,
        **model_params(),
    log:
        f"{LOGS}/fit_covariance_{{part}}.log",
    benchmark:
        f"{BENCH}/fit_covariance_{{part}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    script:
        "../scripts/fit_covariance.py"


rule eigendecompose:
    """Eigendecompose every A and S in float64."""
    input:
        covariance=f"{RUN}/factors/covariance.safetensors",
    output:
        eigen=f"{RUN}/factors/eigen.safetensors",
    log:
        f"{LOGS}/eigendecompose.log",
    benchmark:
        f"{BENCH}/eigendecompose.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    script:
        "../scripts/eigendecompose.py"


rule fit_eigenvalue_correction:
    """Sum the EK-FAC eigenvalues (Q_Sᵀ G Q_A)² over one shard of the fitting sample."""
    input:
        model=f"{RUN}/model",
        sequences=f"{RUN}/corpus/sequences.parquet",
        tokens=f"{RUN}/corpus/tokens.npy",
        eigen=f"{RUN}/factors/eigen.safetensors",
    output:
        correction=f"{RUN}/factors/lambda/shard_{{part}}.safetensors",
    params:
        fitting=config["fitting"],
        fisher=FISHER,
        **model_params(),
    log:
        f"{LOGS}/fit_eigenvalue_correction_{{part}}.log",
    benchmark:
        f"{BENCH}/fit_eigenvalue_correction_{{part}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    script:
        "../scripts/fit_eigenvalue_correction.py"


rule merge_factors:
    """Join the fitting shards' partial sums exactly: sum the sums, add the counts."""
    input:
        shards=expand(f"{RUN}/factors/{{{{factor}}}}/shard_{{part}}.safetensors", part=FIT_SHARDS),
    output:
        merged=f"{RUN}/factors/{{factor}}.safetensors",
    wildcard_constraints:
        factor="covariance|lambda",
    log:
        f"{LOGS}/merge_{{factor}}.log",
    conda:
        ENV
    resources:
        **CPU_JOB,
    script:
        "../scripts/merge_factors.py"
