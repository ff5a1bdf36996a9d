"""Rule paper_figures: the paper's analyses of one run's scores, each a PNG, its table and a caption."""

import json
from pathlib import Path

from influence.analysis import figures, probes
from influence.analysis import tables as analysis
from influence.engine import files
from influence.engine.data import encode_query
from influence.engine.model import load_tokenizer
from influence.inputs.queries import load_queries
from influence.run.runlog import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "paper_figures", **smk.params) as (log, stats):
    scores = files.read_table(smk.input.scores)
    queries = load_queries(smk.input.queries)
    tags = {q.id: q.tags for q in queries}
    k = smk.params.top_k
    tables = {
        "sparsity": analysis.sorted_influences(scores),
        "top_share": analysis.top_share(scores),
        "layer_shares": analysis.layer_shares(scores, top_n=k),
        "cross_lingual": analysis.cross_lingual(scores, tags, k=k),
        "query_flip": analysis.flip_comparison(scores, tags, k=k),
        "phrase_order": probes.probe_summary(files.read_table(smk.input.probes), scores),
    }
    fits = analysis.power_law_fits(scores)
    tokenizer = load_tokenizer(smk.input.model)
    completion_tokens = {
        q.id: sum(label >= 0 for label in encode_query(tokenizer, q.id, q.prompt, q.completion)[1]) for q in queries
    }
    n_tokens = files.read_table(smk.input.sequences, columns=["seq_id", "n_tokens"]).set_index("seq_id")["n_tokens"]
    captions = {
        "sparsity": figures.plot_sparsity(tables["sparsity"], smk.output.sparsity, fits),
        "top_share": figures.plot_top_share(tables["top_share"], smk.output.top_share),
        "layer_shares": figures.plot_layer_heatmap(tables["layer_shares"], smk.output.layer_shares, top_n=k),
        "cross_lingual": figures.plot_cross_lingual(tables["cross_lingual"], smk.output.cross_lingual, k=k),
        "query_flip": figures.plot_flip(tables["query_flip"], smk.output.query_flip, k=k),
        "phrase_order": figures.plot_phrase_probes(tables["phrase_order"], smk.output.phrase_order),
    }
    for name, table in tables.items():
        files.write_table(table, Path(smk.output.sparsity).with_name(f"{name}.parquet"))
    files.write_table(fits, smk.output.fits)
    files.write_table(analysis.max_influence_table(scores, n_tokens, completion_tokens), smk.output.max_influence)
    Path(smk.output.captions).write_text(json.dumps(captions, indent=2), encoding="utf-8")
    stats.update(queries=len(tags), rows={name: len(t) for name, t in tables.items()})
