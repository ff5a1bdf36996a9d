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


# Light rules (HTML and figures from small tables) run where Snakemake runs, not as cluster jobs.
localrules:
    all,
    report,
    paper_figures,
    sample_figures,


rule all:
    input:
        report=f"{SCORES}/report.html",
        scores=f"{SCORES}/scores.parquet",
        tokens=f"{SCORES}/tokens.parquet",
        figures=f"{FIGURES}/captions.json",
        sample_figures=f"{SAMPLE}/captions.json",
    default_target: True


onsuccess:
    print(f"\nInfluence report: {Path(SCORES, 'report.html').resolve()}\n")
