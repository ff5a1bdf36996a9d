# Factor paths depend only on the model, the fitting data, the layers and the label sampling.
FACTORS = f"{MRUN}/factors/layers~{{layers}}"


rule fit_covariance:
    """Sum a aᵀ and g gᵀ per tracked layer over one shard of the fitting sample."""
    input:
        unpack(models_checked),
        model=f"{MRUN}/model",
        sequences=f"{MRUN}/corpus/sequences.parquet",
        tokens=f"{MRUN}/corpus/tokens.npy",
        preflight=ancient(PREFLIGHT),
    output:
        covariance=f"{FACTORS}/covariance/shard_{{part}}.safetensors",
    log:
        f"{MLOGS}/layers~{{layers}}/fit_covariance_{{part}}.log",
    benchmark:
        f"{MBENCH}/layers~{{layers}}/fit_covariance_{{part}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        fitting=FITTING_SAMPLE,
        fisher=FISHER,
    script:
        "../scripts/fit_covariance.py"


rule eigendecompose:
    """Eigendecompose every A and S in fitting.eigen_dtype (float64 unless set)."""
    input:
        covariance=f"{FACTORS}/covariance.safetensors",
    output:
        eigen=f"{FACTORS}/eigen.safetensors",
    log:
        f"{MLOGS}/layers~{{layers}}/eigendecompose.log",
    benchmark:
        f"{MBENCH}/layers~{{layers}}/eigendecompose.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        device=config["model"]["device"],
        eigen_dtype=config["fitting"]["eigen_dtype"],
    script:
        "../scripts/eigendecompose.py"


rule fit_eigenvalue_correction:
    """Sum the EK-FAC eigenvalues (Q_Sᵀ G Q_A)² over one shard of the fitting sample."""
    input:
        model=f"{MRUN}/model",
        sequences=f"{MRUN}/corpus/sequences.parquet",
        tokens=f"{MRUN}/corpus/tokens.npy",
        eigen=f"{FACTORS}/eigen.safetensors",
    output:
        correction=f"{FACTORS}/lambda/shard_{{part}}.safetensors",
    log:
        f"{MLOGS}/layers~{{layers}}/fit_eigenvalue_correction_{{part}}.log",
    benchmark:
        f"{MBENCH}/layers~{{layers}}/fit_eigenvalue_correction_{{part}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        fitting=FITTING_SAMPLE,
        fisher=FISHER,
    script:
        "../scripts/fit_eigenvalue_correction.py"


rule merge_factors:
    """Join the fitting shards' partial sums exactly: sum the sums, add the counts."""
    input:
        shards=expand(f"{FACTORS}/{{factor}}/shard_{{part}}.safetensors", part=FIT_SHARDS, allow_missing=True),
    output:
        merged=f"{FACTORS}/{{factor}}.safetensors",
    log:
        f"{MLOGS}/layers~{{layers}}/merge_{{factor}}.log",
    wildcard_constraints:
        factor="covariance|lambda",
    conda:
        ENV
    resources:
        **CPU_JOB,
    script:
        "../scripts/merge_factors.py"
