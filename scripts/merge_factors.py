"""Rule merge_factors: the fitting shards' partial sums joined exactly (sums summed, counts added)."""

from functools import reduce

from influence.engine import artefacts, files, names
from influence.run.runlog import rule_log

KINDS = {"covariance": names.KIND_COVARIANCE, "lambda": names.KIND_CORRECTION}

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "merge_factors", factor=smk.wildcards.factor, shards=len(smk.input.shards)) as (log, stats):
    kind = KINDS[smk.wildcards.factor]
    metas = [files.read_metadata(path) for path in smk.input.shards]
    for path, meta in zip(smk.input.shards, metas):
        if (meta[names.META_MODEL], meta[names.META_SETTINGS]) != (
            metas[0][names.META_MODEL],
            metas[0][names.META_SETTINGS],
        ):
            raise ValueError(
                f"{path} was fitted on another model or with other settings than {smk.input.shards[0]}; "
                "delete the factor shards and rerun."
            )
    merged = reduce(
        lambda a, b: a.merge(b),
        (artefacts.load_factor_sums(p, kind, metas[0][names.META_MODEL]) for p in smk.input.shards),
    )
    artefacts.save_factor_sums(
        smk.output.merged, merged, kind, metas[0][names.META_MODEL], metas[0][names.META_SETTINGS]
    )
    stats.update(sequences=merged.n_sequences, tokens=merged.n_tokens)
