"""Rule token_scores: per-token influence of each query's top sequences."""

from pathlib import Path

import pandas as pd
from influence.engine import artefacts, files
from influence.engine.model import load_tokenizer
from influence.engine.scores import token_scores
from influence.engine.sequences import TokenStore, ordered_batches
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "token_scores", **smk.params) as (log, stats):
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    tokenizer = load_tokenizer(smk.input.model)
    pre = artefacts.load_preconditioned(smk.input.preconditioned, digest)
    top = files.read_table(smk.input.top)
    store = TokenStore(Path(smk.input.sequences).parent)
    wanted = set(zip(top["query_id"], top["seq_id"]))
    order, batches = ordered_batches(store, sorted(top["seq_id"].unique()), smk.params.batch_size)
    rows = []
    for seq_id, scores in zip(order, token_scores(model, layers, pre, batches)):  # scores: (T, Q)
        token_ids = store.ids(seq_id)
        for q, query_id in enumerate(pre.query_ids):
            if (query_id, seq_id) in wanted:
                rows += [
                    (query_id, seq_id, t, tid, tokenizer.decode([tid]), float(scores[t, q]))
                    for t, tid in enumerate(token_ids)
                ]
    columns = ["query_id", "seq_id", "position", "token_id", "token", "influence"]
    files.write_table(pd.DataFrame(rows, columns=columns), smk.output.tokens)
    stats.update(describe_model(model, layers), pairs=len(wanted), rows=len(rows))
