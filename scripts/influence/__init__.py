"""EK-FAC influence functions for causal language models: the library behind every rule of the workflow.

It never imports snakemake. `engine/` computes (factors, preconditioning, scores, artefacts, the estimator
registry) and imports nothing outside itself; `evaluation/` measures against ground truth; the flat modules
hold the prefilter, analyses, figures, sweeps and the rule scripts' helpers. Sign and scale conventions live
in `engine/conventions.md`; read it before comparing numbers with other tools.
"""
