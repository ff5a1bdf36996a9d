"""Rule fit_idf: document frequencies of hashed word features over the whole corpus."""

from influence.candidates.tfidf import TfidfSettings, corpus_chunks, fit_idf
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "fit_idf", **smk.params) as (log, stats):
    idf = fit_idf(corpus_chunks(smk.input.sequences), TfidfSettings(n_features=smk.params.n_features))
    idf.save(smk.output.idf)
    stats.update(documents=idf.n_docs)
