"""Rule report: an HTML page of every query's top sequences with per-token highlighting."""

from pathlib import Path

from influence.engine import files
from influence.inputs.queries import load_queries
from influence.run.report import render_report
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "report", **smk.params) as (log, stats):
    queries = load_queries(smk.input.queries)
    # the validation's verdict first, once `snakemake validate` has written it; then the preflight's checks
    sections = [Path(smk.input.validation).read_text(encoding="utf-8")] if "validation" in smk.input.keys() else []
    if "preflight" in smk.input.keys():
        sections.append(Path(smk.input.preflight).read_text(encoding="utf-8"))
    page = render_report(
        queries, files.read_table(smk.input.top), files.read_table(smk.input.tokens), smk.params.setting, sections
    )
    Path(smk.output.html).write_text(page, encoding="utf-8")
    log.info("report written to %s", Path(smk.output.html).resolve())
    stats.update(queries=len(queries), bytes=len(page))
