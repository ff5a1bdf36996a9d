"""Rule tfidf_filter: each query's top-k candidates by TF-IDF cosine (k = 0 keeps all)."""

from influence.engine import io
from influence.queries import load_queries
from influence.runlog import rule_log
from influence.tfidf import IdfModel, candidate_union, corpus_chunks, top_k_candidates

smk = snakemake  # noqa: F821 (injected by Snakemake)
top_k = int(smk.wildcards.top_k)
with rule_log(smk.log[0], "tfidf_filter", top_k=top_k) as (log, stats):
    idf = IdfModel.load(smk.input.idf)
    queries = {q.id: q.text for q in load_queries(smk.input.queries)}
    candidates = top_k_candidates(idf, corpus_chunks(smk.input.sequences), queries, k=top_k)
    io.write_table(candidates, smk.output.candidates)
    stats.update(
        documents=idf.n_docs, queries=len(queries), rows=len(candidates), union=len(candidate_union(candidates))
    )
