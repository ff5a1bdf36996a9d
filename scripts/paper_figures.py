"""Rule paper_figures: the paper's analyses of one run's scores, each a PNG, its table and a caption.

The analyses that pair queries by their tags (cross_lingual, query_flip, phrase_order) run on the queries
whose tags allow them; with none, the figure is a placeholder and its caption and the log say which tag
is missing.
"""

import json
from pathlib import Path

from influence.analysis import figures, probes
from influence.analysis import tables as analysis
from influence.engine import files
from influence.engine.model import load_tokenizer
from influence.inputs.queries import load_queries
from influence.plotting import plot_skipped
from influence.run.runlog import rule_log

TITLES = {
    "cross_lingual": "Cross-lingual transfer",
    "query_flip": "Flipped queries",
    "phrase_order": "Phrase-order probes",
}

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
    completion_tokens = {q.id: sum(label >= 0 for label in q.token_ids(tokenizer)[1]) for q in queries}
    n_tokens = files.read_table(smk.input.sequences, columns=["seq_id", "n_tokens"]).set_index("seq_id")["n_tokens"]
    plots = {
        "sparsity": lambda table, path: figures.plot_sparsity(table, path, fits),
        "top_share": figures.plot_top_share,
        "layer_shares": lambda table, path: figures.plot_layer_heatmap(table, path, top_n=k),
        "cross_lingual": lambda table, path: figures.plot_cross_lingual(table, path, k=k),
        "query_flip": lambda table, path: figures.plot_flip(table, path, k=k),
        "phrase_order": figures.plot_phrase_probes,
    }
    skipped = {  # why an empty table is empty: the tags the queries lack
        "cross_lingual": lambda: analysis.why_no_translations(tags),
        "query_flip": lambda: analysis.why_no_flips(tags),
        "phrase_order": lambda: probes.why_no_probes(queries, smk.params.templates),
    }
    captions = {}
    for name, table in tables.items():
        if table.empty and name in skipped:
            reason = skipped[name]() or "no query pairs"
            log.info("%s skipped: %s", name, reason)
            captions[name] = plot_skipped(smk.output[name], TITLES[name], reason)
        else:
            captions[name] = plots[name](table, smk.output[name])
    for name, table in tables.items():
        files.write_table(table, Path(smk.output.sparsity).with_name(f"{name}.parquet"))
    files.write_table(fits, smk.output.fits)
    files.write_table(analysis.max_influence_table(scores, n_tokens, completion_tokens), smk.output.max_influence)
    Path(smk.output.captions).write_text(json.dumps(captions, indent=2), encoding="utf-8")
    stats.update(queries=len(tags), rows={name: len(t) for name, t in tables.items()})
