"""Rule tfidf_filter: each query's top-k candidates by TF-IDF cosine (k = 0 keeps all)."""

from influence.candidates.tfidf import IdfModel, candidate_union, corpus_chunks, top_k_candidates
from influence.engine import files
from influence.inputs.queries import load_queries
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
top_k = int(smk.wildcards.top_k)
with rule_log(smk.log[0], "tfidf_filter", top_k=top_k) as (log, stats):
    idf = IdfModel.load(smk.input.idf)
    queries = {q.id: q.text for q in load_queries(smk.input.queries)}
    candidates = top_k_candidates(idf, corpus_chunks(smk.input.sequences), queries, k=top_k)
    files.write_table(candidates, smk.output.candidates)
    stats.update(
        documents=idf.n_docs, queries=len(queries), rows=len(candidates), union=len(candidate_union(candidates))
    )
