"""Rule index_figures: recall of the TF-IDF top-k against the index's top-n over every indexed sequence."""

import numpy as np
import pandas as pd
from influence.candidates import figures as index_figures
from influence.candidates.gradient_index import tfidf_recall_of_index
from influence.candidates.tfidf import IdfModel, tfidf_matrix
from influence.engine import files
from influence.inputs.queries import load_queries
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "index_figures") as (log, stats):
    top = files.read_table(smk.input.top)
    indexed = [s for path in smk.input.shards for s in files.read_metadata(path)["seq_ids"]]
    texts = files.read_table(smk.input.sequences, columns=["seq_id", "text"]).set_index("seq_id").loc[indexed, "text"]
    queries = [q for q in load_queries(smk.input.queries) if q.id in set(top["query_id"])]
    idf = IdfModel.load(smk.input.idf)
    similarity = (tfidf_matrix([q.text for q in queries], idf) @ tfidf_matrix(texts.tolist(), idf).T).toarray()
    table = pd.DataFrame(
        {
            "query_id": np.repeat([q.id for q in queries], len(indexed)),
            "seq_id": np.tile(np.asarray(indexed, dtype=object), len(queries)),
            "tfidf": similarity.ravel(),
        }
    )
    n = len(indexed)
    grid = sorted({m * 10**e for e in range(int(np.log10(max(n, 1))) + 1) for m in (1, 2, 5)} | {n})
    recall = tfidf_recall_of_index(top, table, [k for k in grid if k <= n])
    files.write_table(recall, smk.output.tables[0])
    caption = index_figures.plot_index_tfidf_recall(recall, smk.output.index_tfidf_recall)
    log.info("caption: %s", caption)
    stats.update(queries=len(queries), indexed=n)
