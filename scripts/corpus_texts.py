"""Rule corpus_texts (model sweep): the corpus text once for all models, what the TF-IDF prefilter reads."""

from influence.corpus import read_source
from influence.engine import io
from influence.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "corpus_texts", corpus=list(smk.input.corpus), **smk.params) as (log, stats):
    corpus = read_source(smk.input.corpus, smk.params.wordnet, smk.params.text_field, smk.params.id_field)
    io.write_table(corpus[["seq_id", "text"]], smk.output.texts)
    stats.update(documents=len(corpus))
