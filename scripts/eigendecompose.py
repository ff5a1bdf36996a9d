"""Rule eigendecompose: eigenvalues and eigenvectors of every A and S, in `fitting.eigen_dtype` (float64)."""

from influence.engine import artefacts, files, names
from influence.engine.eigen import eigendecompose
from influence.engine.model import resolve_device
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "eigendecompose", **smk.params) as (log, stats):
    sums = artefacts.load_factor_sums(smk.input.covariance, names.KIND_COVARIANCE)
    meta = files.read_metadata(smk.input.covariance)
    # eigh on the GPU if any, in fitting.eigen_dtype
    eigen = eigendecompose(sums, device=resolve_device(smk.params.device), dtype=smk.params.eigen_dtype)
    counts = dict(tokens=sums.n_tokens, sequences=sums.n_sequences)
    del sums  # saving serialises a copy of the eigenvectors: free the sums first
    artefacts.save_eigen(
        smk.output.eigen,
        eigen,
        meta[names.META_MODEL],
        {**meta[names.META_SETTINGS], "eigen_dtype": smk.params.eigen_dtype},
        counts["tokens"],
        counts["sequences"],
    )
    stats.update(modules=len(eigen), **counts)
