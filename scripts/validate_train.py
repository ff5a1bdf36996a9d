"""Rule validate_train: one part of the validation's further-trainings, each from the run's checkpoint, and every
chosen query's log p(completion | prompt) after it; finished trainings are cached and found again on a rerun."""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from influence.engine import files
from influence.engine.model import load_tokenizer
from influence.engine.sequences import SEQUENCES, TokenStore
from influence.evaluation.retrain import cached_retrains, retrain_digest
from influence.evaluation.training import further_trainer
from influence.inputs.queries import load_queries
from influence.run.runlog import rule_log
from influence.validation.plan import checkpoint_digest, part_of

smk = snakemake  # noqa: F821 (injected by Snakemake)
part = int(smk.wildcards.part)
torch.set_num_threads(smk.threads)
with rule_log(smk.log[0], "validate_train", part=part, **smk.params) as (log, stats):
    trainings = part_of(files.read_table(smk.input.trainings), part, smk.params.n_parts)
    query_ids = files.read_table(smk.input.base)["query_id"].tolist()
    by_id = {q.id: q for q in load_queries(smk.input.queries)}
    queries = [by_id[q] for q in query_ids]
    corpus = Path(smk.input.sequences).parent
    store = TokenStore(corpus)
    position = {seq_id: i for i, seq_id in enumerate(store.table["seq_id"])}

    class Sequences:  # the corpus by position, read on demand: a training touches a few hundred sequences
        def __getitem__(self, i: int) -> list[int]:
            return store.ids(store.table["seq_id"].iat[i])

    tokenizer = load_tokenizer(smk.input.model)
    # what a cached training depends on besides its sequences: the weights, the corpus's tokens, the queries
    shape = {
        "checkpoint": checkpoint_digest(smk.input.model),
        "tokens": files.read_table_with_metadata(corpus / SEQUENCES)[1].get("tokens_checksum"),
        "queries": [(q.id, q.prompt, q.completion) for q in queries],
    }
    rows, reused = [], 0
    for seed, group in trainings.groupby("seed"):
        recipe = {**smk.params.recipe, "seed": int(seed)}
        recipe["layers"] = smk.params.layers if recipe.pop("parameters") == "tracked" else None
        ids = sorted(group["training_id"].unique())
        keeps = [np.sort([position[s] for s in group.loc[group["training_id"] == t, "seq_id"]]) for t in ids]
        measure = further_trainer(smk.input.model, smk.params, tokenizer, Sequences(), queries, recipe)
        cached = sum(
            (Path(smk.params.cache) / f"{retrain_digest(k, {**shape, 'recipe': recipe})}.npy").exists() for k in keeps
        )
        log.info(
            "seed %d: %d trainings, %d found in the cache, %d trained now", seed, len(ids), cached, len(ids) - cached
        )
        reused += cached
        outcomes = cached_retrains(
            keeps,
            measure,
            smk.params.cache,
            {**shape, "recipe": recipe},
            [f"training {t}" for t in ids],
            int(seed),
            desc=f"further-trainings (seed {seed})",
            hint="lower validate.recipe.lr and rerun",
        )
        rows += [(t, q, float(v)) for t, values in zip(ids, outcomes) for q, v in zip(query_ids, values)]
        del measure
    files.write_table(pd.DataFrame(rows, columns=["training_id", "query_id", "log_prob"]), smk.output.outcomes)
    n = trainings["training_id"].nunique()
    stats.update(trainings=n, reused=reused, trained=n - reused, sequences=len(trainings))
