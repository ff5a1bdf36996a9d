"""Rule fit_eigenvalue_correction: Σ over sequences of (Q_Sᵀ G Q_A)² per tracked layer, one fitting shard."""

from pathlib import Path

from influence.engine import artefacts, names
from influence.engine.factors import fit_eigenvalue_correction
from influence.run.runlog import describe_model, rule_log
from influence.run.steps import fitting_batches, fitting_settings, load_tracked_model

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "fit_eigenvalue_correction", shard=smk.wildcards.part, **smk.params) as (log, stats):
    model, layers, digest = load_tracked_model(smk.input.model, smk.params)
    eigen = artefacts.load_eigen(smk.input.eigen, digest)
    first, batches = fitting_batches(
        Path(smk.input.sequences).parent, smk.params.fitting, int(smk.wildcards.part), smk.params.fitting["n_shards"]
    )
    # Another seed than the covariance's: fresh label samples, as kronfluence draws them.
    sums = fit_eigenvalue_correction(
        model, layers, eigen, batches, smk.params.fisher, seed=smk.params.fitting["seed"] + 1, first_batch=first
    )
    artefacts.save_factor_sums(smk.output.correction, sums, names.KIND_CORRECTION, digest, fitting_settings(smk.params))
    stats.update(describe_model(model, layers), sequences=sums.n_sequences, tokens=sums.n_tokens)
