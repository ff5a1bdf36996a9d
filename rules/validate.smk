# Does attribution work on this model and corpus? (target `validate`, not in the default run): every method's
# top sequences for a few of the run's queries, further-training from the run's checkpoint on them, on random
# k-sets and on random halves of the pool, and a verdict. Further-trainings are split into `validate.n_parts`
# independent jobs (a cluster spreads them over nodes) and cached under retrains/ (outside the declared
# outputs), so an interrupted run resumes with the finished ones.


include: "helpers/validate.smk"  # this stage's paths and settings


rule validate_plan:
    """Every method's scores over the candidates, the pool of their top sequences, and the trainings to run."""
    input:
        unpack(validation_factor_inputs),
        model=f"{MRUN}/model",
        queries=queries_source(),
        candidates=candidates_path,
        sequences=f"{MRUN}/corpus/sequences.parquet",
        tokens=f"{MRUN}/corpus/tokens.npy",
    output:
        scores=f"{VALIDATION}/scores.parquet",
        extremes=f"{VALIDATION}/extremes.parquet",
        pool=f"{VALIDATION}/pool.parquet",
        plan=f"{VALIDATION}/plan.parquet",
        trainings=f"{VALIDATION}/trainings.parquet",
        base=f"{VALIDATION}/base.parquet",
    log:
        f"{VALIDATION}/logs/validate_plan.log",
    benchmark:
        f"{VALIDATION}/benchmarks/validate_plan.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        validate=config["validate"],
        estimator=setting_value("estimator"),
        damping=damping_of,
        rank=setting_value("rank"),
        batch_size=config["scoring"]["batch_size"],
        refine=validation_refine_params(),
    script:
        "../scripts/validate_plan.py"


rule validate_train:
    """One part of the further-trainings: each from the run's checkpoint, log p of every chosen query after it."""
    input:
        model=f"{MRUN}/model",
        queries=queries_source(),
        trainings=f"{VALIDATION}/trainings.parquet",
        base=f"{VALIDATION}/base.parquet",
        sequences=f"{MRUN}/corpus/sequences.parquet",
        tokens=f"{MRUN}/corpus/tokens.npy",
    output:
        outcomes=f"{VALIDATION}/outcomes/part_{{part}}.parquet",
    log:
        f"{VALIDATION}/logs/validate_train_{{part}}.log",
    benchmark:
        f"{VALIDATION}/benchmarks/validate_train_{{part}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        recipe=config["validate"]["recipe"],
        n_parts=config["validate"]["n_parts"],
        cache=f"{VALIDATION}/retrains",
    script:
        "../scripts/validate_train.py"


rule validate_summary:
    """Effects beyond random k-sets, further-training LDS, the noise floor, the verdict and its figure."""
    input:
        scores=f"{VALIDATION}/scores.parquet",
        pool=f"{VALIDATION}/pool.parquet",
        plan=f"{VALIDATION}/plan.parquet",
        trainings=f"{VALIDATION}/trainings.parquet",
        base=f"{VALIDATION}/base.parquet",
        outcomes=expand(f"{VALIDATION}/outcomes/part_{{part}}.parquet", part=VALIDATION_PARTS, allow_missing=True),
    output:
        table=f"{VALIDATION}/validation.parquet",
        per_query=f"{VALIDATION}/per_query.parquet",
        noise=f"{VALIDATION}/noise.parquet",
        figure=report(f"{VALIDATION}/validation.png", caption="captions/validation.rst", category="Validation"),
        captions=f"{VALIDATION}/captions.json",
        verdict=f"{VALIDATION}/verdict.md",
        section=f"{VALIDATION}/verdict.html",
    log:
        f"{VALIDATION}/logs/validate_summary.log",
    conda:
        ENV
    resources:
        **LIGHT_JOB,
    params:
        estimator=setting_value("estimator"),
        recipe=config["validate"]["recipe"],
        seed=config["validate"]["seed"],
    script:
        "../scripts/validate_summary.py"


rule validation_report:
    """The run's report with the validation's verdict as its first section."""
    input:
        top=f"{SCORES}/top.parquet",
        tokens=f"{SCORES}/tokens.parquet",
        queries=queries_source(),
        validation=f"{VALIDATION}/verdict.html",
    output:
        html=f"{VALIDATION}/report.html",
    log:
        f"{VALIDATION}/logs/validation_report.log",
    conda:
        ENV
    resources:
        **LIGHT_JOB,
    params:
        setting=setting_label,
    script:
        "../scripts/report.py"


rule validate:
    """Target: the validation of the run's own setting (and of every model in a model sweep)."""
    input:
        per_model(f"{VALIDATION}/verdict.md", setting=SETTING),
        per_model(f"{VALIDATION}/report.html", setting=SETTING),
