"""Rule paper_figures: the paper's analyses of one run's scores, each a PNG, its table and a caption."""

import json
from pathlib import Path

import pandas as pd
from influence import analysis, figures
from influence.queries import load_queries
from influence.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "paper_figures", **smk.params) as (log, stats):
    scores = pd.read_parquet(smk.input.scores)
    tags = {q.id: q.tags for q in load_queries(smk.input.queries)}
    k = smk.params.top_k
    tables = {
        "sparsity": analysis.sorted_influences(scores),
        "top_share": analysis.top_share(scores),
        "layer_shares": analysis.layer_shares(scores, top_n=k),
        "cross_lingual": analysis.cross_lingual(scores, tags, k=k),
        "phrase_order": analysis.flip_comparison(scores, tags, k=k),
    }
    fits = analysis.power_law_fits(scores)
    captions = {
        "sparsity": figures.plot_sparsity(tables["sparsity"], smk.output.sparsity, fits),
        "top_share": figures.plot_top_share(tables["top_share"], smk.output.top_share),
        "layer_shares": figures.plot_layer_heatmap(tables["layer_shares"], smk.output.layer_shares, top_n=k),
        "cross_lingual": figures.plot_cross_lingual(tables["cross_lingual"], smk.output.cross_lingual, k=k),
        "phrase_order": figures.plot_flip(tables["phrase_order"], smk.output.phrase_order, k=k),
    }
    for name, table in tables.items():
        table.to_parquet(Path(smk.output.sparsity).with_name(f"{name}.parquet"), index=False)
    fits.to_parquet(smk.output.fits, index=False)
    Path(smk.output.captions).write_text(json.dumps(captions, indent=2))
    stats.update(queries=len(tags), rows={name: len(t) for name, t in tables.items()})
