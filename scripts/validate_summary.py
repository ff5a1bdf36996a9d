"""Rule validate_summary: effects beyond random k-sets, further-training LDS and the noise floor per method, the
verdict (Markdown and the report's HTML section) and the figure with its caption."""

import json
from pathlib import Path

import pandas as pd
from influence.engine import files
from influence.run.runlog import rule_log
from influence.validation import measures, verdict

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "validate_summary", **smk.params) as (log, stats):
    plan, trainings = files.read_table(smk.input.plan), files.read_table(smk.input.trainings)
    outcomes = pd.concat([files.read_table(path) for path in smk.input.outcomes], ignore_index=True)
    pool = files.read_table(smk.input.pool)
    values, noise = measures.per_query(
        plan, trainings, outcomes, files.read_table(smk.input.base), files.read_table(smk.input.scores), pool["seq_id"]
    )
    table = measures.summary(values, noise, smk.params.estimator, smk.params.seed)
    files.write_table(table, smk.output.table)
    files.write_table(values, smk.output.per_query)
    files.write_table(noise, smk.output.noise)
    caption = verdict.plot(table, smk.output.figure)
    Path(smk.output.captions).write_text(json.dumps({"validation": caption}, indent=1), encoding="utf-8")
    facts = {"queries": len(noise), "pool": len(pool), "trainings": trainings["training_id"].nunique()}
    text = verdict.markdown(table, smk.params.estimator, smk.params.recipe, facts, noise)
    Path(smk.output.verdict).write_text(text, encoding="utf-8")
    Path(smk.output.section).write_text(
        verdict.section_html(table, smk.params.estimator, smk.params.recipe, noise), encoding="utf-8"
    )
    log.info("verdict:\n%s", text)
    stats.update(**facts)
