# EK-FAC influence functions for LLMs: which training sequences most influenced an answer?
# The chain and the data contracts are described in README.md; every setting in config.yaml.

from pathlib import Path


configfile: Path(workflow.basedir) / "config.yaml"  # defaults; --configfile / --config override them


include: "rules/common.smk"
include: "rules/model.smk"
include: "rules/corpus.smk"
include: "rules/factors.smk"
include: "rules/queries.smk"
include: "rules/scores.smk"
include: "rules/report.smk"
include: "rules/analysis.smk"
include: "rules/evaluate.smk"
include: "rules/evaluate_measures.smk"


rule all:
    input:
        report=f"{SCORES}/report.html",
        scores=f"{SCORES}/scores.parquet",
        tokens=f"{SCORES}/tokens.parquet",
        figures=f"{FIGURES}/captions.json",
        sample_figures=f"{SAMPLE}/captions.json",
    default_target: True


onsuccess:
    for path in (Path(SCORES, "report.html"), Path(EVAL, "verdict.md")):
        if path.exists():  # only the targets this invocation built or found
            print(f"\n{'Influence report' if path.suffix == '.html' else 'Evaluation verdict'}: {path.resolve()}\n")
