"""Rule ihvp_steps_figure: EK-FAC + CG's accuracy against the exact influence after every CG step, per damping, and
against the refinement set's size."""

import pandas as pd
from influence.evaluation.figures import plot_steps, plot_subsets
from influence.evaluation.ihvp_steps import summarise_steps, summarise_subsets, tables_of_cells
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "ihvp_steps_figure", **smk.params) as (log, stats):
    steps = tables_of_cells([pd.read_parquet(path) for path in smk.input.steps], smk.params.cells)
    summary = summarise_steps(steps)
    summary.to_parquet(smk.output.table, index=False)
    log.info("caption: %s", plot_steps(summary, smk.output.figure))
    subsets = summarise_subsets(
        tables_of_cells([pd.read_parquet(path) for path in smk.input.subsets], smk.params.cells)
    )
    subsets.to_parquet(smk.output.subsets_table, index=False)
    log.info("caption: %s", plot_subsets(subsets, smk.output.subsets_figure))
    stats.update(rows=len(summary), cells=len(smk.params.cells))
