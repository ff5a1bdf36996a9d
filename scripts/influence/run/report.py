"""The human-readable report: each query's top sequences, tokens coloured by influence."""

from __future__ import annotations

import html

import pandas as pd

from ..inputs.queries import Query

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; width: 100%; }
td, th { padding: 4px 8px; border-bottom: 1px solid #eee; vertical-align: top; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.query { background: #f6f6f6; padding: 8px; border-radius: 4px; }
.completion { font-weight: bold; }
.tok { white-space: pre-wrap; }
"""

CAPTION = (
    "Influence = the change in log p(completion | prompt) per unit upweighting of the sequence "
    "(positive: the sequence makes the completion more likely), estimated with {setting}. "
    "Token colours split a sequence's influence over its tokens: red raises, blue lowers the completion's "
    "log-probability; intensity is relative to the largest token influence of that sequence. "
    "TF-IDF rank is the sequence's rank for this query in the prefilter ('-': kept for another query)."
)


def highlight(tokens: pd.DataFrame) -> str:
    """Tokens of one sequence as spans whose background encodes their influence."""
    scale = max(tokens["influence"].abs().max(), 1e-30)
    spans = []
    for token, value in zip(tokens["token"], tokens["influence"]):
        alpha = min(1.0, abs(value) / scale)
        colour = f"rgba(214,39,40,{alpha:.2f})" if value > 0 else f"rgba(31,119,180,{alpha:.2f})"
        spans.append(f'<span class="tok" style="background:{colour}" title="{value:.3g}">{html.escape(token)}</span>')
    return "".join(spans)


def _query_section(query: Query, top: pd.DataFrame, tokens: pd.DataFrame) -> str:
    tags = ", ".join(f"{k}={v}" for k, v in query.tags.items())
    rows = []
    for row in top.sort_values("influence_rank").itertuples():
        rank = "-" if pd.isna(row.tfidf_rank) else int(row.tfidf_rank)
        text = highlight(tokens[tokens["seq_id"] == row.seq_id].sort_values("position"))
        rows.append(
            f"<tr><td class=num>{row.influence_rank}</td><td class=num>{row.influence:.4g}</td>"
            f"<td class=num>{rank}</td><td>{html.escape(str(row.seq_id))}</td><td>{text}</td></tr>"
        )
    return (
        f'<h2 id="{html.escape(query.id)}">{html.escape(query.id)}</h2><p>{html.escape(tags)}</p>'
        f"<p class=query>{html.escape(query.prompt)}<span class=completion>{html.escape(query.completion)}</span></p>"
        "<table><tr><th>rank</th><th>influence</th><th>TF-IDF rank</th><th>seq_id</th><th>text</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def render_report(
    queries: list[Query], top: pd.DataFrame, tokens: pd.DataFrame, setting: str, sections: list[str] = ()
) -> str:
    """The whole HTML page; `sections` (HTML, e.g. the validation's verdict) come before the queries."""
    index = " · ".join(f'<a href="#{html.escape(q.id)}">{html.escape(q.id)}</a>' for q in queries)
    parts = [_query_section(q, top[top["query_id"] == q.id], tokens[tokens["query_id"] == q.id]) for q in queries]
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>Top influential sequences</title>"
        f"<style>{STYLE}</style></head><body><h1>Top influential sequences</h1>"
        f"<p>{html.escape(CAPTION.format(setting=setting))}</p>{''.join(sections)}<p>{index}</p>{''.join(parts)}"
        "</body></html>"
    )
