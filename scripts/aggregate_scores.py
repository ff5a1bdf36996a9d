"""Rule aggregate_scores: one table of every scored pair, ranked per query, with TF-IDF columns."""

import pandas as pd
from influence.engine import files
from influence.run.runlog import rule_log
from influence.stats import ranked

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "aggregate_scores", **smk.params) as (log, stats):
    scores = pd.concat([files.read_table(path) for path in smk.input.shards], ignore_index=True)
    tfidf = files.read_table(smk.input.candidates)
    if "tfidf_rank" not in tfidf.columns:  # candidates from the gradient index: its columns, no TF-IDF ranks
        tfidf = tfidf.assign(tfidf_score=float("nan"), tfidf_rank=float("nan"))
    scores = scores.merge(tfidf, on=["query_id", "seq_id"], how="left")
    # The union is scored against every query: a candidate another query's filter kept has no rank here.
    scores["in_tfidf_top_k"] = scores["tfidf_rank"].notna()
    scores = ranked(scores).rename(columns={"rank": "influence_rank"})  # ties by seq_id (stats.ranked)
    front = ["query_id", "seq_id", "influence", "influence_rank", "tfidf_score", "tfidf_rank", "in_tfidf_top_k"]
    scores = scores[front + [c for c in scores.columns if c not in front]]
    files.write_table(scores, smk.output.scores)
    files.write_table(scores[scores["influence_rank"] <= smk.params.top_n][front], smk.output.top)
    stats.update(pairs=len(scores), queries=scores["query_id"].nunique(), candidates=scores["seq_id"].nunique())
