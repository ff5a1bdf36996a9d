"""Rule evaluation_summary: the evaluation table, its figures and the verdict written from the numbers."""

import json
from pathlib import Path

from influence.engine import io
from influence.evaluation import figures as eval_figures
from influence.evaluation.measures import markdown_to_html, summarise, verdict
from influence.evaluation.tables import accuracy_rows, ihvp_rows, lds_rows, pool_seeds, tracing_rows
from influence.queries import load_queries
from influence.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "evaluation_summary", **smk.params) as (log, stats):
    seeds, models, k = smk.params.seeds, smk.params.models, smk.params.top_k
    rows = []
    for i in range(len(seeds)):
        documents = io.read_table(smk.input.documents[i])
        queries = load_queries(smk.input.queries[i])
        variants = {q.id: q.tags["variant"] for q in queries}
        facts = {q.id: q.tags["fact_id"] for q in queries}
        rows += ihvp_rows(io.read_table(smk.input.ihvp[i]))
        for j, model in enumerate(models):
            scores = io.read_table(smk.input.scores[i * len(models) + j])
            rows += tracing_rows(scores, documents, variants, facts, model, k)
            rows += accuracy_rows(io.read_table(smk.input.accuracy[i * len(models) + j]), model)
            if model == "tiny":
                rows += lds_rows(
                    scores, io.read_table(smk.input.lds_subsets[i]), io.read_table(smk.input.lds_outcomes[i])
                )
    table = summarise(pool_seeds(rows))
    io.write_table(table, smk.output.table)
    out = smk.output
    captions = {
        "ihvp_accuracy": eval_figures.plot_ihvp(table, out.ihvp_accuracy),
        "lds": eval_figures.plot_lds(table, out.lds),
        "fact_tracing": eval_figures.plot_fact_tracing(table, out.fact_tracing, k),
    }
    for name in captions:
        measures = {
            "ihvp_accuracy": ["spearman", "relative_error"],
            "lds": ["lds"],
            "fact_tracing": [f"recall_at_{k}", "mrr"],
        }[name]
        io.write_table(table[table["measure"].isin(measures)], Path(out.table).with_name(f"{name}.parquet"))
    Path(out.captions).write_text(json.dumps(captions, indent=2), encoding="utf-8")
    accuracy = table[(table["measure"] == "accuracy") & (table["variant"] == "original")]
    text = verdict(table, smk.params.headline_damping, dict(zip(accuracy["model"], accuracy["value"])))
    text += "\n## Figures\n\n" + "\n\n".join(captions.values()) + "\n"
    Path(out.verdict).write_text(text, encoding="utf-8")
    Path(out.verdict_html).write_text(markdown_to_html(text), encoding="utf-8")
    stats.update(rows=len(table), seeds=len(seeds), models=models)
