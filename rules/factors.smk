# Factor paths depend only on the model, the fitting data, the layers and the label sampling.


rule fit_covariance:
    """Sum a aᵀ and g gᵀ per tracked layer over the fitting sample."""
    input:
        model=f"{RUN}/model",
        sequences=f"{RUN}/corpus/sequences.parquet",
        tokens=f"{RUN}/corpus/tokens.npy",
    output:
        covariance=f"{RUN}/factors/covariance.safetensors",
    params:
        fitting=config["fitting"],
        fisher=FISHER,
        **model_params(),
    log:
        f"{LOGS}/fit_covariance.log",
    benchmark:
        f"{BENCH}/fit_covariance.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        mem_mb=MEM_MB,
        runtime=RUNTIME,
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
        gpu=GPU,
        mem_mb=MEM_MB,
        runtime=RUNTIME,
    script:
        "../scripts/eigendecompose.py"


rule fit_eigenvalue_correction:
    """Fit the EK-FAC eigenvalues Λ = E[(Q_Sᵀ G Q_A)²] over the fitting sample."""
    input:
        model=f"{RUN}/model",
        sequences=f"{RUN}/corpus/sequences.parquet",
        tokens=f"{RUN}/corpus/tokens.npy",
        eigen=f"{RUN}/factors/eigen.safetensors",
    output:
        correction=f"{RUN}/factors/lambda.safetensors",
    params:
        fitting=config["fitting"],
        fisher=FISHER,
        **model_params(),
    log:
        f"{LOGS}/fit_eigenvalue_correction.log",
    benchmark:
        f"{BENCH}/fit_eigenvalue_correction.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        mem_mb=MEM_MB,
        runtime=RUNTIME,
    script:
        "../scripts/fit_eigenvalue_correction.py"
