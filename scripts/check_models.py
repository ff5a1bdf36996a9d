"""Rule check_models (model sweep): every model prepared, every query measurable by each model; the model table."""

import json
from pathlib import Path

from influence.engine import files
from influence.engine.model import load_tokenizer
from influence.inputs.queries import load_queries
from influence.run.runlog import rule_log
from influence.scale import tables as scale

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "check_models", **smk.params) as (log, stats):
    queries = load_queries(smk.params.queries)
    abouts, tokens = {}, {}
    for name, directory in zip(smk.params.names, smk.input.models):
        abouts[name] = json.loads(Path(directory, "about.json").read_text(encoding="utf-8"))
        # completions are tokenised per model: one that leaves a completion empty stops here, named
        tokens[name] = scale.completion_tokens(load_tokenizer(directory), queries, name)
    table = scale.model_table(abouts, smk.params.layers_name)
    files.write_table(table, smk.output.table)
    log.info("models:\n%s", table.to_string())
    stats.update(models=len(table), completion_tokens={name: sum(t.values()) for name, t in tokens.items()})
