"""Rule lds_retrain: the evaluation's model retrained on random subsets of the planted corpus."""

import numpy as np
import pandas as pd
import torch
from influence.engine import files
from influence.engine.model import load_tokenizer
from influence.evaluation.retrain import cached_retrains
from influence.evaluation.training import encode_texts, retrain_shape, retrainer
from influence.inputs.queries import load_queries
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
torch.set_num_threads(smk.threads)  # 1 for the tiny model: a 32-wide model trains ~30x faster on one thread
with rule_log(smk.log[0], "lds_retrain", seed=smk.wildcards.seed, model=smk.wildcards.model, **smk.params) as (
    log,
    stats,
):
    r, lds, seed = smk.params.retrain, smk.params.lds, int(smk.wildcards.seed)
    tokenizer = load_tokenizer(smk.input.model)
    documents = files.read_table(smk.input.documents)
    queries = load_queries(smk.input.queries)
    sequences = encode_texts(tokenizer, documents["text"].tolist(), smk.params.max_tokens)
    rng = np.random.default_rng([seed, 1])
    n_keep = min(len(sequences) - 1, max(1, round(lds["fraction"] * len(sequences))))
    keeps = [np.sort(rng.choice(len(sequences), size=n_keep, replace=False)) for _ in range(r["lds_subsets"])]
    log.info("%d subsets of %d of %d sequences (%s model)", len(keeps), n_keep, len(sequences), smk.wildcards.model)
    outcomes = cached_retrains(
        keeps,
        retrainer(smk.wildcards.model, tokenizer, sequences, queries, r, seed),
        smk.params.cache,
        {**retrain_shape(r), "max_tokens": smk.params.max_tokens, "documents": documents["seq_id"].tolist()},
        [f"LDS subset {i}" for i in range(len(keeps))],
        seed,
    )
    seq_ids = documents["seq_id"].to_numpy()
    subsets = [pd.DataFrame({"subset": i, "seq_id": seq_ids[keep]}) for i, keep in enumerate(keeps)]
    measured = [
        pd.DataFrame({"subset": i, "query_id": [q.id for q in queries], "log_prob": values})
        for i, values in enumerate(outcomes)
    ]
    if not keeps:  # lds_subsets 0: the measure is skipped for this model, the tables are empty
        subsets, measured = (
            [pd.DataFrame(columns=["subset", "seq_id"])],
            [pd.DataFrame(columns=["subset", "query_id", "log_prob"])],
        )
    files.write_table(pd.concat(subsets, ignore_index=True), smk.output.subsets)
    files.write_table(pd.concat(measured, ignore_index=True), smk.output.outcomes)
    stats.update(subsets=len(keeps), sequences_per_subset=n_keep, queries=len(queries))
