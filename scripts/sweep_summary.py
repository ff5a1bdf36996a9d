"""Rule sweep_summary: how each sweep point's scores and top lists differ from the run's own setting."""

from pathlib import Path

from influence.analysis.sweep import compare_to_base, plot_sweep, summarise
from influence.engine import files
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "sweep_summary", points=len(smk.params.settings), top_n=smk.params.top_n) as (log, stats):
    settings = list(smk.params.settings)
    scores = {
        s: files.read_table(path, columns=["query_id", "seq_id", "influence"])
        for s, path in zip(settings, smk.input.scores)
    }
    points = dict(zip(settings, smk.params.points))
    table = compare_to_base(scores, points, base=settings[0], top_n=smk.params.top_n)
    summary = summarise(table)
    files.write_table(table, smk.output.table)
    files.write_table(summary, smk.output.summary)
    Path(smk.output.caption).write_text(plot_sweep(summary, smk.output.figure, smk.params.top_n), encoding="utf-8")
    stats.update(rows=len(table))
