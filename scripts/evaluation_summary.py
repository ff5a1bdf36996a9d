"""Rule evaluation_summary: the evaluation table, its figures and the verdict written from the numbers."""

import json
from pathlib import Path

from influence.engine import files
from influence.evaluation import figures as eval_figures
from influence.evaluation.measures import summarise
from influence.evaluation.tables import (
    accuracy_rows,
    ihvp_rows,
    lds_rows,
    paired_rows,
    pool_seeds,
    qld_rows,
    tracing_rows,
)
from influence.evaluation.verdict import markdown_to_html, verdict
from influence.inputs.queries import load_queries
from influence.run.runlog import rule_log

FIGURE_MEASURES = {
    "ihvp_accuracy": lambda m, k: m in ("spearman", "relative_error"),
    "lds": lambda m, k: m == "lds",
    "fact_tracing": lambda m, k: m in (f"recall_at_{k}", "mrr"),
    "qld": lambda m, k: m.startswith("qld"),
}

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "evaluation_summary", **smk.params) as (log, stats):
    k, inputs = smk.params.top_k, smk.input
    rows = []
    for i, (difficulty, seed) in enumerate(smk.params.cells):
        documents = files.read_table(inputs.documents[i])
        queries = load_queries(inputs.queries[i])
        variants = {q.id: q.tags["variant"] for q in queries}
        facts = {q.id: q.tags["fact_id"] for q in queries}
        cell = ihvp_rows(files.read_table(inputs.ihvp[i]), facts, seed)
        for j, (d, s, model) in enumerate(smk.params.model_cells):
            if (d, s) != (difficulty, seed):
                continue
            scores = files.read_table(inputs.scores[j])
            cell += tracing_rows(scores, documents, variants, facts, model, k, seed)
            cell += accuracy_rows(files.read_table(inputs.accuracy[j]), model, facts, seed)
            cell += qld_rows(files.read_table(inputs.qld[j]), seed, model)
            subsets, outcomes = files.read_table(inputs.lds_subsets[j]), files.read_table(inputs.lds_outcomes[j])
            if len(outcomes):  # empty when the model's LDS is skipped (evaluation.finetune.retrains.lds_subsets 0)
                cell += lds_rows(scores, subsets, outcomes, facts, seed, model)
        rows += pool_seeds(cell, difficulty)
    pooled = pool_seeds(rows)
    table = summarise(pooled + paired_rows(pooled))
    files.write_table(table, smk.output.table)
    out = smk.output
    captions = {
        "ihvp_accuracy": eval_figures.plot_ihvp(table, out.ihvp_accuracy),
        "lds": eval_figures.plot_lds(table, out.lds),
        "fact_tracing": eval_figures.plot_fact_tracing(table, out.fact_tracing, k),
        "qld": eval_figures.plot_qld(table, out.qld),
    }
    for name, chosen in FIGURE_MEASURES.items():
        files.write_table(
            table[table["measure"].map(lambda m, c=chosen: c(m, k))], Path(out.table).with_name(f"{name}.parquet")
        )
    Path(out.captions).write_text(json.dumps(captions, indent=2))
    text = verdict(table, smk.params.headline_damping)
    text += "\n## Figures\n\n" + "\n\n".join(captions.values()) + "\n"
    Path(out.verdict).write_text(text)
    Path(out.verdict_html).write_text(markdown_to_html(text))
    stats.update(rows=len(table), cells=len(smk.params.cells))
