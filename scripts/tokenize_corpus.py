"""Rule tokenize_corpus: the corpus (or the WordNet glosses) as token ids plus a sequence table."""

from pathlib import Path

from influence.engine.model import load_tokenizer
from influence.engine.sequences import tokenize_corpus
from influence.inputs.corpus import read_source
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "tokenize_corpus", corpus=list(smk.input.corpus), **smk.params) as (log, stats):
    corpus = read_source(
        smk.input.corpus, smk.params.wordnet, smk.params.text_field, smk.params.id_field, smk.params.split
    )
    table = tokenize_corpus(
        load_tokenizer(smk.input.model),
        corpus,
        smk.params.max_tokens,
        Path(smk.output.sequences).parent,
        source=smk.input.corpus[0],
    )
    stats.update(
        documents=len(corpus),
        sequences=len(table),
        tokens=int(table["n_tokens"].sum()),
        dropped_under_two_tokens=len(corpus) - len(table),
    )
