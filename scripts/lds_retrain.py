"""Rule lds_retrain: the tiny model retrained from scratch on random subsets of the planted corpus."""

import numpy as np
import pandas as pd
import torch
from influence.engine import io
from influence.engine.model import load_tokenizer
from influence.evaluation.retrain import cached_retrains
from influence.evaluation.training import encode_texts, retrain_tiny
from influence.queries import load_queries
from influence.runlog import rule_log

torch.set_num_threads(1)  # a 32-wide model trains ~30x faster on one thread than on two contended ones
smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "lds_retrain", seed=smk.wildcards.seed, **smk.params) as (log, stats):
    t, lds, seed = smk.params.tiny, smk.params.lds, int(smk.wildcards.seed)
    tokenizer = load_tokenizer(smk.input.model)
    documents = io.read_table(smk.input.documents)
    queries = load_queries(smk.input.queries)
    sequences = encode_texts(tokenizer, documents["text"].tolist(), smk.params.max_tokens)
    rng = np.random.default_rng([seed, 1])
    n_keep = min(len(sequences) - 1, max(1, round(lds["fraction"] * len(sequences))))
    keeps = [np.sort(rng.choice(len(sequences), size=n_keep, replace=False)) for _ in range(lds["n_subsets"])]
    log.info("%d subsets of %d of %d sequences", len(keeps), n_keep, len(sequences))
    outcomes = cached_retrains(
        keeps,
        lambda keep: retrain_tiny(tokenizer, sequences, queries, keep, t, seed),
        smk.params.cache,
        {"tiny": t, "max_tokens": smk.params.max_tokens, "documents": documents["seq_id"].tolist()},
        [f"LDS subset {i}" for i in range(len(keeps))],
        seed,
    )
    seq_ids = documents["seq_id"].to_numpy()
    subsets = [pd.DataFrame({"subset": i, "seq_id": seq_ids[keep]}) for i, keep in enumerate(keeps)]
    io.write_table(pd.concat(subsets, ignore_index=True), smk.output.subsets)
    measured = [
        pd.DataFrame({"subset": i, "query_id": [q.id for q in queries], "log_prob": values})
        for i, values in enumerate(outcomes)
    ]
    io.write_table(pd.concat(measured, ignore_index=True), smk.output.outcomes)
    stats.update(subsets=len(keeps), sequences_per_subset=n_keep, queries=len(queries))
