# EK-FAC influence functions for LLMs: which training sequences most influenced an answer?
# The chain and the data contracts are described in docs/architecture.md; every setting in config.yaml.
#
# Rules, one file per stage: model → corpus → tfidf (prefilter) → factors (covariance, eigendecomposition,
# eigenvalue correction) → precondition (queries) → scores → report, analysis; sweep and the ground-truth
# evaluation (evaluate, evaluate_measures) on top. rules/common.smk validates the config and builds every
# path and input from the library (scripts/influence): the estimator registry (engine/estimators.py),
# artefact names (engine/names.py) and the key~value setting names (run/settings.py).

from pathlib import Path


configfile: Path(workflow.basedir) / "config.yaml"  # defaults; --configfile / --config override them


report: "rules/captions/workflow.rst"  # the opening page of `snakemake --report`


include: "rules/common.smk"
include: "rules/model.smk"
include: "rules/corpus.smk"
include: "rules/tfidf.smk"
include: "rules/factors.smk"
include: "rules/precondition.smk"
include: "rules/scores.smk"
include: "rules/report.smk"
include: "rules/analysis.smk"
include: "rules/sweep.smk"
include: "rules/evaluate.smk"
include: "rules/evaluate_measures.smk"
include: "rules/evaluate_retrain.smk"
include: "rules/index.smk"
include: "rules/validate.smk"


# Light rules (HTML and figures from small tables) run where Snakemake runs, not as cluster jobs.
localrules:
    all,
    report,
    paper_figures,
    sample_figures,
    index_figures,
    check_models,
    scale_figures,
    validate_summary,
    validation_report,


rule all:
    default_target: True
    input:
        **sweep_outputs(),
        **scale_outputs(),
        report=per_model(f"{SCORES}/report.html", setting=SETTING),
        tokens=per_model(f"{SCORES}/tokens.parquet", setting=SETTING),
        figures=per_model(f"{FIGURES}/captions.json", setting=SETTING),
        sample_figures=per_model(f"{SAMPLE}/captions.json", setting=setting_names(POINTS[0])["sample"]),
        sweep_scores=per_model(f"{SCORES}/scores.parquet", setting=SWEEP_SETTINGS),


onsuccess:
    reports = [Path(path) for path in per_model(f"{SCORES}/report.html", setting=SETTING)]
    for path in (*reports, Path(SCALE, "captions.json"), Path(EVAL, "verdict.md")):
        if path.exists():  # only the targets this invocation built or found
            kind = {".html": "Influence report", ".json": "Scale figures"}.get(path.suffix, "Evaluation verdict")
            print(f"\n{kind}: {path.resolve() if path.suffix != '.json' else path.parent.resolve()}\n")
