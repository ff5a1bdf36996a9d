"""Rule lds_retrain: the tiny model retrained from scratch on random halves of the planted corpus."""

import numpy as np
import pandas as pd
from influence.engine import io
from influence.engine.model import load_tokenizer
from influence.evaluation.training import completion_stats, encode_texts, tiny_llama, train
from influence.queries import load_queries
from influence.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "lds_retrain", seed=smk.wildcards.seed, **smk.params) as (log, stats):
    t, lds, seed = smk.params.tiny, smk.params.lds, int(smk.wildcards.seed)
    tokenizer = load_tokenizer(smk.input.model)
    documents = io.read_table(smk.input.documents)
    queries = load_queries(smk.input.queries)
    sequences = encode_texts(tokenizer, documents["text"].tolist(), smk.params.max_tokens)
    rng = np.random.default_rng([seed, 1])
    n_keep = max(1, round(lds["fraction"] * len(sequences)))
    subsets, outcomes = [], []
    for subset in range(lds["n_subsets"]):
        keep = np.sort(rng.choice(len(sequences), size=n_keep, replace=False))
        log.info("subset %d of %d: %d sequences", subset + 1, lds["n_subsets"], n_keep)
        # Same initialisation and hyperparameters as the full model: only the training data differ.
        model = tiny_llama(len(tokenizer), t["hidden_size"], t["intermediate_size"], t["n_layers"], t["n_heads"], seed)
        train(
            model,
            [sequences[i] for i in keep],
            t["epochs"],
            t["lr"],
            t["batch_size"],
            seed,
            tokenizer.pad_token_id,
            progress=False,
        )
        log_probs, _ = completion_stats(model, tokenizer, queries)
        subsets.append(pd.DataFrame({"subset": subset, "seq_id": documents["seq_id"].to_numpy()[keep]}))
        outcomes.append(pd.DataFrame({"subset": subset, "query_id": [q.id for q in queries], "log_prob": log_probs}))
    io.write_table(pd.concat(subsets, ignore_index=True), smk.output.subsets)
    io.write_table(pd.concat(outcomes, ignore_index=True), smk.output.outcomes)
    stats.update(subsets=lds["n_subsets"], sequences_per_subset=n_keep, queries=len(queries))
