"""The shared figure style: every figure of the workflow is drawn through `figure_axes`.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never pyplot, so importing a figure
module neither switches a global backend nor leaks open figures in long runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

INFLUENCE_UNIT = "influence on log p(completion) (nats)"
# Sizes for a figure shown at about its own width (6.4 in) in a report: 9-10 pt text.
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "figure.titlesize": 11,
}


@contextmanager
def figure_axes(path: str | os.PathLike, ncols: int = 1, size: tuple[float, float] = (6.4, 4.0)) -> Iterator:
    """Yield (figure, axes) and save to `path`; rc settings stay active until the file is written."""
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        yield fig, fig.subplots(1, ncols, squeeze=False)[0]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)


def plot_recall_curve(
    wide: pd.DataFrame, path: str | os.PathLike, xlabel: str, ylabel: str, title: str, plain_ticks: bool = False
) -> None:
    """Recall against a cut-off (log x): one grey line per query (columns of `wide`), their mean in colour."""
    with figure_axes(path, size=(5.6, 3.8)) as (_fig, (ax,)):
        ax.plot(wide.index, wide.to_numpy(), color="0.75", lw=0.8)
        ax.plot(wide.index, wide.mean(axis=1), "o-", color="#1f77b4", lw=2, label="mean over queries")
        ax.set(xscale="log", ylim=(0, 1.03), xlabel=xlabel, ylabel=ylabel, title=title)
        if plain_ticks:  # k′ = 10, 100 reads better than 10¹, 10²
            ax.set_xticks(wide.index, [str(k) for k in wide.index])
            ax.minorticks_off()
        ax.legend(loc="lower right")


def plot_skipped(path: str | os.PathLike, title: str, reason: str) -> str:
    """A placeholder figure for an analysis the inputs do not allow; returns its caption, 'Skipped: <reason>.'"""
    import textwrap

    with figure_axes(path, size=(6.4, 2.4)) as (_fig, (ax,)):
        ax.axis("off")
        ax.set_title(f"{title}: skipped")
        ax.text(0.5, 0.5, textwrap.fill(reason, 70), ha="center", va="center", transform=ax.transAxes)
    return f"Skipped: {reason}."
