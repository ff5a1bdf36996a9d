"""Rule sample_figures: TF-IDF recall, query batching and estimator agreement from the corpus sample."""

import json
from pathlib import Path

import numpy as np
from influence.analysis import figures
from influence.analysis import tables as analysis
from influence.engine import files
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)


def cutoffs(n: int) -> list[int]:
    """k′ grid 1, 2, 5, 10, 20, 50, … below n, and n itself (where recall must be 1)."""
    grid = [m * 10**e for e in range(int(np.log10(max(n, 1))) + 1) for m in (1, 2, 5)]
    return sorted({k for k in grid if k < n} | {n})


with rule_log(smk.log[0], "sample_figures", **smk.params) as (log, stats):
    scores = files.read_table(smk.input.scores)
    full = scores[scores["query_rank"] == 0]
    by_estimator = {name: table for name, table in full.groupby("estimator", sort=False)}
    main = smk.params.estimator if smk.params.estimator in by_estimator else next(iter(by_estimator))
    ekfac = scores[scores["estimator"] == "ekfac"]
    n_sample = full["seq_id"].nunique()
    tables = {
        "tfidf_recall": analysis.tfidf_recall(
            by_estimator[main], files.read_table(smk.input.tfidf), smk.params.true_k, cutoffs(n_sample)
        ),
        "query_batching": analysis.rank_agreement_sweep(
            ekfac[ekfac["query_rank"] == 0], {r: t for r, t in ekfac.groupby("query_rank") if r > 0}
        ),
        "estimator_agreement": analysis.estimator_correlations(by_estimator),
    }
    captions = {
        "tfidf_recall": figures.plot_tfidf_recall(tables["tfidf_recall"], smk.output.tfidf_recall, n_sample, main),
        "query_batching": figures.plot_rank_agreement(tables["query_batching"], smk.output.query_batching),
        "estimator_agreement": figures.plot_estimator_correlations(
            tables["estimator_agreement"], smk.output.estimator_agreement
        ),
    }
    for name, table in tables.items():
        files.write_table(table, Path(smk.output.captions).with_name(f"{name}.parquet"))
    Path(smk.output.captions).write_text(json.dumps(captions, indent=2), encoding="utf-8")
    stats.update(sample=n_sample, queries=full["query_id"].nunique(), estimators=list(by_estimator))
