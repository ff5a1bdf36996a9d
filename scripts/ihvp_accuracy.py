"""Rule ihvp_accuracy: EK-FAC, EK-FAC + CG, EK-FAC + ASTRA, K-FAC, identity and LiSSA scores against the exact
damped-Fisher influence, and the refiners' accuracy after every step."""

from influence.engine import files
from influence.engine.data import iter_batches, query_batches
from influence.engine.model import load_tokenizer
from influence.evaluation.exact import ihvp_accuracy
from influence.evaluation.training import encode_texts
from influence.inputs.queries import load_queries
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import load_tracked_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "ihvp_accuracy", seed=smk.wildcards.seed, **smk.params) as (log, stats):
    settings = smk.params.ihvp
    model, layers, _ = load_tracked_model(smk.input.model, smk.params)
    tokenizer = load_tokenizer(smk.input.model)
    sequences = encode_texts(tokenizer, files.read_table(smk.input.documents)["text"].tolist(), smk.params.max_tokens)
    batches = list(iter_batches(sequences, smk.params.batch_size, tokenizer.pad_token_id))
    queries = load_queries(smk.input.queries)
    table, steps, subsets = ihvp_accuracy(
        model,
        layers,
        batches,
        query_batches(tokenizer, queries),
        [q.id for q in queries],
        batches,
        settings["dampings"],
        settings["fishers"],
        int(smk.wildcards.seed),
        settings["lissa"],
        {**smk.params.refine, "record_steps": settings["cg_steps"]},
        subset_fractions=settings["refine_fractions"],
        subset_damping=settings["headline_damping"],
        astra=smk.params.astra,
        logger=log,
    )
    files.write_table(table, smk.output.table)
    files.write_table(steps, smk.output.steps)
    files.write_table(subsets, smk.output.subsets)
    stats.update(
        describe_model(model, layers),
        parameters=sum(lay.d_out * lay.d_in_total for lay in layers.values()),
        sequences=len(sequences),
        queries=len(queries),
    )
