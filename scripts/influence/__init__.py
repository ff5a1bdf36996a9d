"""EK-FAC influence functions for causal language models.

The importable engine behind every rule of the workflow. It never imports
snakemake. Sign and scale conventions live in `conventions.md` next to this
file; read it before comparing numbers with other tools.
"""
