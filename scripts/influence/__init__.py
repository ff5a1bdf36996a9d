"""EK-FAC influence functions for causal language models: the library behind every rule of the workflow.

It never imports snakemake. Rooms by concept (each `__init__.py` says what it holds): `engine/` computes
(factors, preconditioning, scores, artefacts, the estimator registry) and imports nothing outside itself;
`inputs/` reads corpora and queries; `candidates/` chooses what is scored (TF-IDF, the gradient index);
`analysis/` and `scale/` turn scores into the paper's tables and figures; `evaluation/` measures against ground
truth; `run/` holds what the rule scripts share. `plotting.py` (the figure style) and `stats.py` (ranking,
intervals) serve every room. Sign and scale conventions live in `engine/conventions.md`; read it before
comparing numbers with other tools.
"""
