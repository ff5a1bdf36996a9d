"""Tables of the model sweep's scale trends (Grosse et al. 2023: how influence changes with model size).

Each function takes one analysis table per model (the tables `paper_figures` and `sample_figures`
write for the run's setting) and the model table (`check_models`: model, parameters, n_layers, …),
and returns one long table with a row group per model: columns `model`, `parameters` first, models in
order of size. Pure pandas/numpy: `scale/figures.py` draws them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..stats import median_interval, t_interval

MODEL_COLUMNS = ["model", "source", "architecture", "parameters", "n_layers", "hidden_size", "vocab_size"]
TOP_SHARE_KS = (1, 10, 100)


def model_table(abouts: Mapping[str, dict], layers_name: str) -> pd.DataFrame:
    """One row per model from prepare_model's about.json: MODEL_COLUMNS and tracked_layers (of `layers_name`)."""
    rows = [
        {
            "model": name,
            **{c: about[c] for c in MODEL_COLUMNS[1:]},
            "tracked_layers": about["tracked_layers"][layers_name],
        }
        for name, about in abouts.items()
    ]
    return pd.DataFrame(rows, columns=[*MODEL_COLUMNS, "tracked_layers"]).sort_values("parameters", ignore_index=True)


def completion_tokens(tokenizer, queries, model: str) -> dict[str, int]:
    """Each query's completion tokens under one model's tokenizer; ValueError naming the model and query
    when a prompt or completion tokenises to nothing (that model cannot measure that query)."""
    counts = {}
    for q in queries:
        try:
            _, labels = q.token_ids(tokenizer)
        except ValueError as error:
            raise ValueError(f"model {model!r}: {error}") from None
        counts[q.id] = sum(label >= 0 for label in labels)
    return counts


def _by_model(rows: list[dict], models: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Rows with `model` and `parameters` first, in the model table's (size) order."""
    table = pd.DataFrame(rows, columns=["model", *columns])
    table.insert(1, "parameters", table["model"].map(models.set_index("model")["parameters"]).astype("int64"))
    order = {name: i for i, name in enumerate(models["model"])}
    return table.sort_values("model", key=lambda s: s.map(order), kind="stable", ignore_index=True)


def sparsity(fits: Mapping[str, pd.DataFrame], shares: Mapping[str, pd.DataFrame], models) -> pd.DataFrame:
    """Per model: the median over queries of the power-law tail exponent α (sparsity_fits) and of the
    top-1/10/100 share of positive influence (top_share), with bootstrap 95% intervals of the median.
    Columns model, parameters, measure (exponent, top_1_share, …), median, ci_low, ci_high, n_queries."""
    rows = []
    for name in fits:
        measures = {"exponent": fits[name]["exponent"]}
        for k in TOP_SHARE_KS:
            measures[f"top_{k}_share"] = shares[name].loc[shares[name]["k"] == k, "share"]
        for measure, values in measures.items():
            median, low, high, n = median_interval(values.to_numpy(float))
            rows.append(
                {"model": name, "measure": measure, "median": median, "ci_low": low, "ci_high": high, "n_queries": n}
            )
    return _by_model(rows, models, ["measure", "median", "ci_low", "ci_high", "n_queries"])


def cross_lingual(tables: Mapping[str, pd.DataFrame], models) -> pd.DataFrame:
    """Per model: mean over translated queries of relative_influence and topk_overlap with the English
    original (the cross_lingual table), Student-t 95% intervals. Columns model, parameters, measure,
    mean, ci_low, ci_high, n_queries (0 when the queries have no translations)."""
    rows = []
    for name, table in tables.items():
        for measure in ("relative_influence", "topk_overlap"):
            values = table[measure].to_numpy(float) if len(table) else np.zeros(0)
            mean, low, high, n = t_interval(values)
            rows.append(
                {"model": name, "measure": measure, "mean": mean, "ci_low": low, "ci_high": high, "n_queries": n}
            )
    return _by_model(rows, models, ["measure", "mean", "ci_low", "ci_high", "n_queries"])


def phrase_order(tables: Mapping[str, pd.DataFrame], models) -> pd.DataFrame:
    """Per model: same-order minus flipped probe influence, each relative to the query's top corpus
    influence (the phrase_order table's `relative`), averaged over queries with a Student-t 95% interval.
    Columns model, parameters, same_order, flipped, difference, ci_low, ci_high, n_queries."""
    rows = []
    for name, table in tables.items():
        wide = table.pivot_table(index="query_id", columns="group", values="relative")
        wide = wide.reindex(columns=["same_order", "flipped"]).dropna()
        difference = (wide["same_order"] - wide["flipped"]).to_numpy(float)
        mean, low, high, n = t_interval(difference)
        rows.append(
            {
                "model": name,
                "same_order": float(wide["same_order"].mean()),
                "flipped": float(wide["flipped"].mean()),
                "difference": mean,
                "ci_low": low,
                "ci_high": high,
                "n_queries": n,
            }
        )
    return _by_model(rows, models, ["same_order", "flipped", "difference", "ci_low", "ci_high", "n_queries"])


def layer_depth(tables: Mapping[str, pd.DataFrame], models) -> pd.DataFrame:
    """Per model and query: the share of the top sequences' influence in each block (the layer_shares
    table summed over a block's modules), at relative depth = block / the model's number of blocks, so
    models of different depth share one axis. Shares sum to 1 per model and query (a module outside any
    block keeps its share with block and relative_depth empty). Columns model, parameters, query_id,
    block, relative_depth, share."""
    n_layers = models.set_index("model")["n_layers"]
    parts = []
    for name, table in tables.items():
        table = table.dropna(subset=["share"])
        block = table["block"].astype("float")  # <NA> -> NaN keeps modules outside any block in the sum
        summed = table.assign(block=block).groupby(["query_id", "block"], dropna=False, sort=True)["share"].sum()
        summed = summed.reset_index().assign(model=name, n_layers=int(n_layers[name]))
        summed["relative_depth"] = summed["block"] / n_layers[name]
        parts.append(summed)
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    columns = ["n_layers", "query_id", "block", "relative_depth", "share"]
    table = _by_model(rows.to_dict("records"), models, columns)
    table["block"] = table["block"].astype("Int64")
    return table


def estimator_agreement(tables: Mapping[str, pd.DataFrame], models) -> pd.DataFrame:
    """The sample's estimator agreement (Spearman ρ per estimator pair) per model. Columns model,
    parameters, estimator_a, estimator_b, spearman_mean, spearman_min, n_queries."""
    columns = ["estimator_a", "estimator_b", "spearman_mean", "spearman_min", "n_queries"]
    rows = [{"model": name, **row} for name, table in tables.items() for row in table[columns].to_dict("records")]
    return _by_model(rows, models, columns)


def query_batching(tables: Mapping[str, pd.DataFrame], models) -> pd.DataFrame:
    """Per model and query rank r: mean over the sample's queries of Spearman ρ between rank-r and
    full-rank EK-FAC scores (Student-t 95% interval) and of their relative L2 error. Columns model,
    parameters, approx_rank, spearman_mean, ci_low, ci_high, relative_l2_mean, n_queries."""
    rows = []
    for name, table in tables.items():
        for rank, group in table.groupby("approx_rank", sort=True):
            mean, low, high, n = t_interval(group["spearman"].to_numpy(float))
            l2 = float(np.nanmean(group["relative_l2"].to_numpy(float))) if len(group) else np.nan
            rows.append(
                {
                    "model": name,
                    "approx_rank": int(rank),
                    "spearman_mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "relative_l2_mean": l2,
                    "n_queries": n,
                }
            )
    columns = ["approx_rank", "spearman_mean", "ci_low", "ci_high", "relative_l2_mean", "n_queries"]
    return _by_model(rows, models, columns)
