"""Rule fit_covariance: Σ a aᵀ and Σ g gᵀ per tracked layer over one shard of the fitting sample."""

from pathlib import Path

from influence.engine import artefacts, names
from influence.engine.factors import fit_covariance
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import fitting_batches, fitting_settings, load_tracked_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "fit_covariance", shard=smk.wildcards.part, **smk.params) as (log, stats):
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    first, batches = fitting_batches(
        Path(smk.input.sequences).parent, smk.params.fitting, int(smk.wildcards.part), smk.params.fitting["n_shards"]
    )
    sums = fit_covariance(model, layers, batches, smk.params.fisher, seed=smk.params.fitting["seed"], first_batch=first)
    artefacts.save_factor_sums(smk.output.covariance, sums, names.KIND_COVARIANCE, digest, fitting_settings(smk.params))
    stats.update(describe_model(model, layers), sequences=sums.n_sequences, tokens=sums.n_tokens)
