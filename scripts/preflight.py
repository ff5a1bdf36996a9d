"""Rule preflight: correctness checks on a few corpus sequences and every query before any fitting."""

import json
from pathlib import Path

from influence.engine import files
from influence.engine.model import load_tokenizer
from influence.engine.sequences import TokenStore, fitting_sample
from influence.inputs.queries import load_queries
from influence.run.preflight import failure_message, html_section, run_preflight
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "preflight", **smk.params) as (log, stats):
    settings = smk.params.preflight
    store = TokenStore(Path(smk.input.sequences).parent)
    chosen = fitting_sample(store.table["seq_id"].tolist(), settings["n_sequences"], settings["seed"])
    sequences = {seq_id: store.ids(seq_id) for seq_id in chosen}
    tokenizer = load_tokenizer(smk.input.model)
    summary, table = run_preflight(
        smk.input.model, dict(smk.params), sequences, load_queries(smk.input.queries), tokenizer, log
    )
    stats.update(passed=summary["passed"], preflight_seconds=summary["seconds"])
    if not summary["passed"] and settings["stop"]:
        raise RuntimeError(failure_message(summary))  # the numbers are in this log; nothing is written
    if not summary["passed"]:
        log.warning(failure_message(summary))
    files.write_table(table, smk.output.table)
    Path(smk.output.html).write_text(html_section(summary), encoding="utf-8")
    Path(smk.output.summary).write_text(json.dumps(summary, indent=1), encoding="utf-8")
