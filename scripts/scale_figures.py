"""Rule scale_figures: the model sweep's trends with model size, each a PNG, its table and a caption."""

import json
from pathlib import Path

from influence.engine import files
from influence.plotting import plot_skipped
from influence.run.runlog import rule_log
from influence.scale import figures as scale_plots
from influence.scale import tables as scale

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0], "scale_figures", **smk.params) as (log, stats):
    models = files.read_table(smk.input.models)
    names = smk.params.names  # the order of every per-model input list

    def per_model(key: str) -> dict:
        return {name: files.read_table(path) for name, path in zip(names, smk.input[key])}

    tables = {
        "scale_sparsity": scale.sparsity(per_model("fits"), per_model("top_share"), models),
        "scale_cross_lingual": scale.cross_lingual(per_model("cross_lingual"), models),
        "scale_phrase_order": scale.phrase_order(per_model("phrase_order"), models),
        "scale_layer_depth": scale.layer_depth(per_model("layer_shares"), models),
        "scale_estimator_agreement": scale.estimator_agreement(per_model("estimator_agreement"), models),
        "scale_query_batching": scale.query_batching(per_model("query_batching"), models),
    }
    plots = {
        "scale_sparsity": scale_plots.plot_sparsity,
        "scale_cross_lingual": scale_plots.plot_cross_lingual,
        "scale_phrase_order": scale_plots.plot_phrase_order,
        "scale_layer_depth": scale_plots.plot_layer_depth,
        "scale_estimator_agreement": scale_plots.plot_estimator_agreement,
        "scale_query_batching": scale_plots.plot_query_batching,
    }
    skipped = {  # analyses that need tags: without those queries, every model's table is empty
        "scale_cross_lingual": "no query is a translation of an English query (tags `group`, `lang`)",
        "scale_phrase_order": "no query has phrase-order probes (tags `kind`, `a`, `b`)",
    }
    captions = {}
    for name, table in tables.items():
        if name in skipped and table["n_queries"].sum() == 0:
            reason = f"{skipped[name]}; each model's figures/<setting>/captions.json names the missing tag"
            log.info("%s skipped: %s", name, reason)
            captions[name] = plot_skipped(smk.output[name], name.replace("_", " "), reason)
        else:
            captions[name] = plots[name](table, smk.output[name])
    for name, table in tables.items():
        files.write_table(table, Path(smk.output[name]).with_suffix(".parquet"))
    Path(smk.output.captions).write_text(json.dumps(captions, indent=2), encoding="utf-8")
    stats.update(models=list(models["model"]), rows={name: len(t) for name, t in tables.items()})
