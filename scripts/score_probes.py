"""Rule score_probes: phrase-order probe sequences from the config's templates, scored like candidates."""

import pandas as pd
from influence.analysis.probes import SCORED_COLUMNS, make_probes, why_no_probes
from influence.engine import artefacts, files
from influence.engine.data import text_batches
from influence.engine.model import load_tokenizer
from influence.engine.scores import score_candidates, scores_table
from influence.inputs.queries import load_queries
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "score_probes", **smk.params) as (log, stats):
    queries = load_queries(smk.input.queries)
    probes = make_probes(queries, smk.params.templates)
    if probes.empty:  # an empty table, so that paper_figures still runs and says why phrase_order is skipped
        log.info("no probes: %s; writing an empty probe table", why_no_probes(queries, smk.params.templates))
        empty = pd.DataFrame({c: pd.Series(dtype=float if c == "influence" else object) for c in SCORED_COLUMNS})
        files.write_table(empty.astype({"template": "int64"}), smk.output.probes)
        stats.update(probes=0)
    else:
        model, layers, digest = load_tracked_model(smk.input.model, smk.params)
        pre = artefacts.load_preconditioned(smk.input.preconditioned, digest)
        batches = text_batches(
            load_tokenizer(smk.input.model), probes["text"], smk.params.max_tokens, smk.params.batch_size
        )
        scores = score_candidates(model, layers, pre, batches)
        table = scores_table(scores, probes["probe_id"].tolist(), pre.query_ids)[["query_id", "seq_id", "influence"]]
        files.write_table(
            table.merge(probes, left_on="seq_id", right_on="probe_id").drop(columns="probe_id"), smk.output.probes
        )
        stats.update(describe_model(model, layers), probes=len(probes), facts=probes["fact_id"].nunique())
