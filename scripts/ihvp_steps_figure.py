"""Rule ihvp_steps_figure: EK-FAC + CG's accuracy against the exact influence after every CG step, per damping."""

import pandas as pd
from influence.evaluation.refinement import plot_steps, steps_seeds, summarise_steps
from influence.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "ihvp_steps_figure", **smk.params) as (log, stats):
    steps = steps_seeds([pd.read_parquet(path) for path in smk.input.steps], smk.params.seeds)
    summary = summarise_steps(steps)
    summary.to_parquet(smk.output.table, index=False)
    log.info("caption: %s", plot_steps(summary, smk.output.figure))
    stats.update(rows=len(summary), seeds=len(smk.params.seeds))
