"""Parameter sweeps: how each sweep point's rankings move away from the run's own setting."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..plotting import figure_axes
from ..run.settings import PARAMETERS
from ..stats import spearman, top_k


def _changed(point: dict, base: dict) -> str:
    """Which parameter a point changes: its name, 'base', or 'grid' when several change."""
    changed = [key for key in PARAMETERS if point[key] != base[key]]
    return "base" if not changed else changed[0] if len(changed) == 1 else "grid"


def compare_to_base(scores: dict[str, pd.DataFrame], points: dict[str, dict], base: str, top_n: int) -> pd.DataFrame:
    """Per sweep point and query: Spearman ρ with the base setting over the candidates both scored,
    and the share of the base's top-n kept in the point's top-n."""
    rows = []
    tops = {setting: top_k(table, top_n) for setting, table in scores.items()}
    base_scores = scores[base].set_index(["query_id", "seq_id"])["influence"]
    for setting, table in scores.items():
        point = points[setting]
        mine = table.set_index(["query_id", "seq_id"])["influence"]
        for query_id in base_scores.index.unique("query_id"):
            a, b = base_scores.loc[query_id], mine.loc[query_id]
            common = a.index.intersection(b.index)
            rho = spearman(a[common].to_numpy(), b[common].to_numpy()) if len(common) > 2 else np.nan
            top_a, top_b = set(tops[base].get(query_id, [])), set(tops[setting].get(query_id, []))
            rows.append(
                {
                    "setting": setting,
                    "changed": _changed(point, points[base]),
                    **{key: "full" if point[key] is None else str(point[key]) for key in PARAMETERS},
                    "query_id": query_id,
                    "n_common": len(common),
                    "spearman": rho,
                    "top_overlap": len(top_a & top_b) / top_n,
                }
            )
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Median and quartiles over queries of both measures, per sweep point."""
    keys = ["setting", "changed", *PARAMETERS]
    quantiles = table.groupby(keys, sort=False)[["spearman", "top_overlap"]].quantile([0.25, 0.5, 0.75])
    wide = quantiles.unstack()
    wide.columns = [f"{measure}_q{int(q * 100)}" for measure, q in wide.columns]
    return wide.reset_index()


def plot_sweep(summary: pd.DataFrame, path: str | os.PathLike, top_n: int) -> str:
    """One panel per swept parameter: median ρ with the base and top-n overlap, quartiles as error bars."""
    base = summary[summary["changed"] == "base"]
    swept = [key for key in PARAMETERS if (summary["changed"] == key).any()] or ["grid"]
    with figure_axes(path, ncols=len(swept), size=(4.2 * len(swept), 3.8)) as (_, axes):
        for ax, key in zip(axes, swept):
            panel = pd.concat([base, summary[summary["changed"] == key]])
            labels = panel[key] if key != "grid" else panel["setting"]
            x = np.arange(len(panel))
            for offset, (measure, name) in enumerate(
                [("spearman", "Spearman ρ with base"), ("top_overlap", f"top-{top_n} overlap with base")]
            ):
                mid = panel[f"{measure}_q50"].to_numpy()
                err = [mid - panel[f"{measure}_q25"].to_numpy(), panel[f"{measure}_q75"].to_numpy() - mid]
                ax.errorbar(x + 0.1 * (offset - 0.5), mid, yerr=err, fmt="o", capsize=3, label=name)
            ax.set_xticks(x, labels, rotation=30, ha="right")
            ax.set_xlim(-0.5, len(panel) - 0.5)
            ax.set_xlabel(key + " (first point: the run's setting)")
            ax.set_ylabel("agreement with the run's setting")
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="grey", lw=0.5)
            ax.legend(fontsize=7, loc="lower left")
    return (
        f"How the rankings move across the sweep: for each point, the median over queries (bars: quartiles) "
        f"of the Spearman correlation of its scores with the run's own setting over the candidates both "
        f"scored, and the share of the setting's top-{top_n} that stays in the point's top-{top_n}."
    )
