# The evaluation's measures: scores for fact tracing, iHVP accuracy, and the summary (retrains: evaluate_retrain.smk).


rule fact_scores:
    """Every estimator's scores of the planted corpus for every query, and the model's query accuracy."""
    input:
        model=eval_model_dir,
        documents=rules.planted_corpus.output.documents,
        queries=rules.planted_corpus.output.queries,
    output:
        scores=f"{EVAL_SEED}/{{model}}/scores.parquet",
        accuracy=f"{EVAL_SEED}/{{model}}/accuracy.parquet",
    log:
        f"{EVAL_SEED}/logs/fact_scores_{{model}}.log",
    benchmark:
        f"{EVAL_SEED}/benchmarks/fact_scores_{{model}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **GPU_JOB,
    params:
        **model_params(),
        scoring=eval_scoring,
        max_tokens=EVAL_SETTINGS["max_tokens"],
    script:
        "../scripts/fact_scores.py"


rule ihvp_accuracy:
    """EK-FAC, EK-FAC + CG, EK-FAC + ASTRA, K-FAC, identity and LiSSA influence against the exact damped-Fisher
    influence on the tiny model, and the refiners' accuracy after every step."""
    input:
        model=f"{EVAL_SEED}/tiny/model",
        documents=rules.planted_corpus.output.documents,
        queries=rules.planted_corpus.output.queries,
    output:
        table=f"{EVAL_SEED}/tiny/ihvp.parquet",
        steps=f"{EVAL_SEED}/tiny/ihvp_steps.parquet",
        subsets=f"{EVAL_SEED}/tiny/ihvp_subsets.parquet",
    log:
        f"{EVAL_SEED}/logs/ihvp_accuracy.log",
    benchmark:
        f"{EVAL_SEED}/benchmarks/ihvp_accuracy.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        **CPU_JOB,
    params:
        **model_params(),
        ihvp=ihvp_settings(),
        refine=config["scoring"]["refine"],
        astra=config["scoring"]["astra"],
        max_tokens=EVAL_SETTINGS["max_tokens"],
        batch_size=EVAL_SETTINGS["scoring"]["batch_size"],
    script:
        "../scripts/ihvp_accuracy.py"


rule evaluation_summary:
    """One table (difficulty × model × measure × estimator × query variant, with intervals), figures and the verdict."""
    input:
        documents=eval_outputs("planted/documents.parquet"),
        queries=eval_outputs("planted/queries.yaml"),
        ihvp=eval_outputs("tiny/ihvp.parquet"),
        lds_subsets=eval_outputs("lds_subsets.parquet", models=True),
        lds_outcomes=eval_outputs("lds_outcomes.parquet", models=True),
        qld=eval_outputs("qld.parquet", models=True),
        scores=eval_outputs("scores.parquet", models=True),
        accuracy=eval_outputs("accuracy.parquet", models=True),
    output:
        **figure_outputs(EVAL, EVAL_FIGURES, "Evaluation"),
        table=f"{EVAL}/evaluation.parquet",
        captions=f"{EVAL}/captions.json",
        verdict=f"{EVAL}/verdict.md",
        verdict_html=report(f"{EVAL}/verdict.html", caption="captions/verdict.rst", category="Evaluation"),
    log:
        f"{EVAL}/logs/evaluation_summary.log",
    conda:
        ENV
    resources:
        **LIGHT_JOB,
    params:
        cells=eval_cells(),
        model_cells=eval_cells(models=True),
        top_k=eval_top_k(),
        headline_damping=EVAL_SETTINGS["ihvp"]["headline_damping"],
    script:
        "../scripts/evaluation_summary.py"


rule ihvp_steps_figure:
    """EK-FAC + CG's and EK-FAC + ASTRA's Spearman ρ and relative error against the exact influence after every step,
    per damping, and EK-FAC + CG's against the refinement set's size."""
    input:
        steps=eval_outputs("tiny/ihvp_steps.parquet"),
        subsets=eval_outputs("tiny/ihvp_subsets.parquet"),
    output:
        figure=report(f"{EVAL}/ihvp_steps.png", caption="captions/ihvp_steps.rst", category="Evaluation"),
        table=f"{EVAL}/ihvp_steps.parquet",
        subsets_figure=report(f"{EVAL}/ihvp_subsets.png", caption="captions/ihvp_subsets.rst", category="Evaluation"),
        subsets_table=f"{EVAL}/ihvp_subsets.parquet",
    log:
        f"{EVAL}/logs/ihvp_steps_figure.log",
    conda:
        ENV
    resources:
        gpu=0,
        mem_mb=2000,
        runtime=10,
    params:
        cells=eval_cells(),
    script:
        "../scripts/ihvp_steps_figure.py"


rule evaluate:
    """Target: the ground-truth evaluation of every estimator (not part of `all`)."""
    input:
        table=f"{EVAL}/evaluation.parquet",
        verdict=f"{EVAL}/verdict.md",
        ihvp_steps=f"{EVAL}/ihvp_steps.png",
