"""Rule preflight: correctness checks on the prepared model, over a few fixed sentences, before any fitting."""

import json
from pathlib import Path

from influence.engine import files
from influence.engine.model import load_tokenizer
from influence.run.preflight import SENTENCES, failure_message, html_section, run_preflight
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "preflight", **smk.params) as (log, stats):
    settings = smk.params.preflight
    tokenizer = load_tokenizer(smk.input.model)
    texts = SENTENCES[: settings["n_sequences"]]  # tokenised as the corpus is: special tokens added
    sequences = {f"sentence {i}": tokenizer(text).input_ids for i, text in enumerate(texts)}
    summary, table = run_preflight(smk.input.model, dict(smk.params), sequences, [], tokenizer, log)
    stats.update(passed=summary["passed"], preflight_seconds=summary["seconds"])
    if not summary["passed"] and settings["stop"]:
        raise RuntimeError(failure_message(summary))  # the numbers are in this log; nothing is written
    if not summary["passed"]:
        log.warning(failure_message(summary))
    files.write_table(table, smk.output.table)
    Path(smk.output.html).write_text(html_section(summary), encoding="utf-8")
    Path(smk.output.summary).write_text(json.dumps(summary, indent=1), encoding="utf-8")
