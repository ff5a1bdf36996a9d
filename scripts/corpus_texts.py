"""Rule corpus_texts (model sweep): the corpus text once for all models, what the TF-IDF prefilter reads."""

from influence.engine import files
from influence.inputs.corpus import read_source
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "corpus_texts", corpus=list(smk.input.corpus), **smk.params) as (log, stats):
    corpus = read_source(
        smk.input.corpus, smk.params.wordnet, smk.params.text_field, smk.params.id_field, smk.params.split
    )
    files.write_table(corpus[["seq_id", "text"]], smk.output.texts)
    stats.update(documents=len(corpus))
