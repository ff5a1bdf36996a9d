"""Phrase-order probes: generation from templates and the group summary, on constructed cases."""

import numpy as np
import pandas as pd
import pytest
from influence.analysis.probes import SCORED_COLUMNS, make_probes, probe_summary, why_no_probes
from influence.inputs.queries import Query

TEMPLATES = {
    "capital": {
        "same_order": ["The capital of {a} is {b}.", "{a}: {b}."],
        "flipped": ["{b} is in {a}."],
        "a_removed": ["It is {b}."],
        "b_removed": ["{a} has one."],
    }
}
QUERIES = [
    Query("fr", "The capital of France is", " Paris", {"kind": "capital", "a": "France", "b": "Paris"}),
    Query("de", "The capital of Germany is", " Berlin", {"kind": "capital", "a": "Germany", "b": "Berlin"}),
    Query("fr_fr", "La capitale de la France est", " Paris", {"lang": "fr"}),  # no a, b: no probes
    Query("gold", "Au is", " gold", {"kind": "element", "a": "Au", "b": "gold"}),
]  # no templates


def test_probes_fill_templates_for_tagged_queries_only():
    probes = make_probes(QUERIES, TEMPLATES)
    assert len(probes) == 2 * 5 and set(probes["fact_id"]) == {"fr", "de"}
    row = probes.set_index("probe_id").loc["probe:de:flipped:0"]
    assert row["text"] == "Berlin is in Germany." and row["group"] == "flipped"


@pytest.mark.parametrize(
    "templates,message",
    [
        ({"capital": {"backwards": ["{b} {a}"]}}, "unknown group 'backwards'"),
        ({"capital": {"same_order": ["{a} {c}"]}}, r"probes.capital.same_order\[0\]"),
    ],
)
def test_bad_templates_are_named(templates, message):
    with pytest.raises(ValueError, match=message):
        make_probes(QUERIES, templates)


def test_summary_means_intervals_and_scale():
    probes = make_probes(QUERIES, TEMPLATES)
    values = {
        "probe:fr:same_order:0": 4.0,
        "probe:fr:same_order:1": 6.0,
        "probe:fr:flipped:0": 0.5,
        "probe:de:same_order:0": 1.0,
        "probe:de:same_order:1": 3.0,
    }
    scores = probes.assign(
        query_id="fr", seq_id=probes["probe_id"], influence=probes["probe_id"].map(values).fillna(0.0)
    )
    corpus = pd.DataFrame({"query_id": "fr", "seq_id": list("abcd"), "influence": [10.0, 1.0, 2.0, 8.0]})
    summary = probe_summary(scores, corpus).set_index("group")
    assert list(summary.index) == ["same_order", "flipped", "a_removed", "b_removed", "other_fact"]
    same = summary.loc["same_order"]
    half = 12.706204736 * np.std([4.0, 6.0], ddof=1) / np.sqrt(2)  # t(0.975, 1 dof)
    assert same["mean"] == 5.0 and same["ci_high"] == pytest.approx(5.0 + half)
    assert same["relative"] == 0.5 and same["corpus_percentile"] == 0.5  # 5 beats 1 and 2 of 10, 1, 2, 8
    assert summary.loc["flipped", "n"] == 1 and np.isnan(summary.loc["flipped", "ci_low"])
    other = summary.loc["other_fact"]  # Germany's same-order probes, averaged per fact
    assert other["n"] == 1 and other["mean"] == 2.0


@pytest.mark.parametrize(
    "tags,missing",
    [
        ({}, "`kind`"),
        ({"kind": "quote", "a": "Hamlet", "b": "Shakespeare"}, "templates"),  # a kind without templates
        ({"kind": "capital", "a": "France"}, "`a` and `b`"),
    ],
)
def test_queries_without_probe_tags_give_no_probes_and_the_reason(tags, missing):
    queries = [Query("q", "The capital of France is", " Paris", tags)]
    assert make_probes(queries, TEMPLATES).empty
    assert missing in why_no_probes(queries, TEMPLATES)
    assert why_no_probes(QUERIES, TEMPLATES) == ""
    empty = pd.DataFrame(columns=SCORED_COLUMNS)
    assert probe_summary(empty, pd.DataFrame({"query_id": ["q"], "seq_id": ["s"], "influence": [1.0]})).empty
