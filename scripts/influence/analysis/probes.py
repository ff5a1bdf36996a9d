"""Phrase-order probes (Grosse et al. 2023, "sensitivity to word ordering").

A query states a fact "A … B", named by its tags `a` and `b` (a: France, b: Paris for "The
capital of France is" → " Paris"). Templates per query `kind` (config `probes`) turn the fact
into short synthetic sequences in four groups:
  same_order  A before B, as in the query  ("The capital of {a} is {b}.")
  flipped     B before A                   ("{b} is the capital of {a}.")
  a_removed   only B                       ("The capital is {b}.")
  b_removed   only A                       ("The capital of {a} is a city.")
The probes are scored against every query like corpus candidates. For each query that owns
probes, `probe_summary` compares the groups, with a control group `other_fact`: the same-order
probes of the other facts (the same wording about an unrelated fact). The paper finds that only
`same_order` carries influence: flipped sequences have near zero.

Pure pandas/scipy: no torch, no snakemake.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from ..stats import t_interval

GROUPS = ("same_order", "flipped", "a_removed", "b_removed")
CONTROL = "other_fact"
PROBE_COLUMNS = ["probe_id", "fact_id", "group", "template", "text"]
SCORED_COLUMNS = ["query_id", "seq_id", "influence", "fact_id", "group", "template", "text"]  # score_probes' table
SUMMARY_COLUMNS = [
    "query_id",
    "group",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "relative",
    "relative_ci_low",
    "relative_ci_high",
    "corpus_percentile",
]


def make_probes(queries: Iterable, templates: Mapping[str, Mapping[str, list[str]]]) -> pd.DataFrame:
    """One row per probe of every query with tags `a`, `b` and a `kind` that has templates.

    Columns probe_id (`probe:<query>:<group>:<i>`), fact_id (the query whose fact it states),
    group, template (index within the group), text.
    """
    rows = []
    for query in queries:
        tags = query.tags
        by_group = templates.get(tags.get("kind"), {})
        if "a" not in tags or "b" not in tags or not by_group:
            continue
        for group, texts in by_group.items():
            if group not in GROUPS:
                raise ValueError(f"probes.{tags['kind']}: unknown group {group!r}; use one of {GROUPS}.")
            for i, template in enumerate(texts):
                try:
                    text = template.format(a=tags["a"], b=tags["b"])
                except (KeyError, IndexError) as err:
                    raise ValueError(
                        f"probes.{tags['kind']}.{group}[{i}] {template!r}: only {{a}} and {{b}} "
                        f"can be filled ({err!r})."
                    ) from None
                rows.append((f"probe:{query.id}:{group}:{i}", query.id, group, i, text))
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def why_no_probes(queries: Iterable, templates: Mapping[str, Mapping[str, list[str]]]) -> str:
    """Why `make_probes` finds no query to build probes from: the tag the queries lack ('' if one has them)."""
    queries = list(queries)
    kinds = sorted({q.tags["kind"] for q in queries if "kind" in q.tags})
    templated = [q for q in queries if templates.get(q.tags.get("kind"))]
    if not kinds:
        return f"no query has a `kind` tag (the `probes` templates have kinds {', '.join(sorted(templates))})"
    if not templated:
        return f"no query's `kind` ({', '.join(kinds)}) has templates under `probes` ({', '.join(sorted(templates))})"
    if not any("a" in q.tags and "b" in q.tags for q in templated):
        return "no query with a templated `kind` has both tags `a` and `b` (the phrases filled into the templates)"
    return ""


def probe_summary(probe_scores: pd.DataFrame, corpus_scores: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Each probe group's influence on the query whose fact it states, with intervals.

    `probe_scores` has query_id, seq_id (the probe), influence, fact_id and group (the
    `score_probes` table); `corpus_scores` the run's scores of
    corpus candidates, which put probes on the corpus's scale: `relative` = influence / the query's
    largest corpus influence, `corpus_percentile` = share of the query's corpus candidates below the
    group mean. Columns: SUMMARY_COLUMNS; intervals are Student-t over templates (or facts, for
    `other_fact`) at `confidence`.
    """
    rows = []
    for query_id in sorted(set(probe_scores["fact_id"]) & set(probe_scores["query_id"])):
        on_query = probe_scores[probe_scores["query_id"] == query_id]
        own = on_query[on_query["fact_id"] == query_id]
        groups = {g: own.loc[own["group"] == g, "influence"] for g in GROUPS}
        others = on_query[(on_query["fact_id"] != query_id) & (on_query["group"] == "same_order")]
        groups[CONTROL] = others.groupby("fact_id")["influence"].mean()  # one value per unrelated fact
        corpus = corpus_scores.loc[corpus_scores["query_id"] == query_id, "influence"].to_numpy(float)
        scale = corpus.max() if len(corpus) and corpus.max() > 0 else float("nan")
        for group, values in groups.items():
            if not len(values):
                continue
            mean, low, high, _ = t_interval(values.to_numpy(float), confidence)
            percentile = float((corpus < mean).mean()) if len(corpus) else float("nan")
            rows.append(
                (query_id, group, len(values), mean, low, high, mean / scale, low / scale, high / scale, percentile)
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
