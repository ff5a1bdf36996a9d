"""Rule tfidf_filter: each query's top-k candidates by TF-IDF cosine (k = 0 keeps all)."""

import pyarrow.parquet as pq
from influence.queries import load_queries
from influence.runlog import rule_log
from influence.tfidf import TfidfSettings, candidate_union, fit_idf, top_k_candidates

CHUNK = 50_000

smk = snakemake  # noqa: F821 (injected by Snakemake)


def chunks():
    """The corpus in chunks straight from parquet: memory stays bounded for 10M sequences."""
    for batch in pq.ParquetFile(smk.input.sequences).iter_batches(CHUNK, columns=["seq_id", "text"]):
        yield batch.to_pandas()


with rule_log(smk.log[0], "tfidf_filter", **smk.params) as (log, stats):
    idf = fit_idf(chunks(), TfidfSettings(n_features=smk.params.n_features))
    queries = {q.id: q.text for q in load_queries(smk.input.queries)}
    candidates = top_k_candidates(idf, chunks(), queries, k=smk.params.top_k or 0)
    idf.save(smk.output.idf)
    candidates.to_parquet(smk.output.candidates, index=False)
    stats.update(documents=idf.n_docs, queries=len(queries), rows=len(candidates),
                 union=len(candidate_union(candidates)))
