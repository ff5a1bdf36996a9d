"""Bring your own: a user's CSV corpus with its own field names and queries with few or no tags, run to the end.

Every analysis runs on the tags there are, or writes an empty table, a placeholder figure and a caption (and a
log line) naming the tag it lacks.
"""

import json

import pandas as pd
import pytest
import yaml
from helpers import ROOT, build_tiny_model, snakemake

pytestmark = pytest.mark.workflow

PAPER_FIGURES = ["sparsity", "top_share", "layer_shares", "cross_lingual", "query_flip", "phrase_order"]
SAMPLE_FIGURES = ["tfidf_recall", "query_batching", "estimator_agreement"]
SETTING = "layers~mlp_estimator~ekfac_damping~relative-0.1_rank~8_topk~20"
QUOTES = [  # (author, quotation): the sources of the queries' answers
    ("William Shakespeare", "To be, or not to be, that is the question."),
    ("William Shakespeare", "All the world's a stage, and all the men and women merely players."),
    ("René Descartes", "I think, therefore I am."),
    ("Julius Caesar", "I came, I saw, I conquered."),
    ("Socrates", "The unexamined life is not worth living."),
    ("Benjamin Franklin", "In this world nothing can be said to be certain, except death and taxes."),
    ("Isaac Newton", "If I have seen further it is by standing on the shoulders of giants."),
    (
        "Jane Austen",
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife.",
    ),
    ("Charles Dickens", "It was the best of times, it was the worst of times."),
    ("Heraclitus", "No man ever steps in the same river twice."),
]
# Six queries of a user's own, without any tag.
UNTAGGED = [
    {"id": "hamlet", "prompt": "To be, or not to be, that is the", "completion": " question"},
    {"id": "descartes", "prompt": "I think, therefore I", "completion": " am"},
    {"id": "caesar", "prompt": "I came, I saw, I", "completion": " conquered"},
    {"id": "socrates", "prompt": "The unexamined life is not worth", "completion": " living"},
    {"id": "franklin", "prompt": "Nothing can be said to be certain, except death and", "completion": " taxes"},
    {"id": "newton", "prompt": "If I have seen further it is by standing on the shoulders of", "completion": " giants"},
]
# Some tags only: groups without lang, one language only, no flipped variant; one query with probe tags.
PARTIAL = [
    {**UNTAGGED[0], "tags": {"group": "hamlet", "lang": "en"}},
    {**UNTAGGED[1], "tags": {"group": "descartes", "lang": "en", "order": "original"}},
    {**UNTAGGED[2], "tags": {"group": "caesar"}},
    {**UNTAGGED[3], "tags": {"lang": "en"}},
    {**UNTAGGED[4], "tags": {"kind": "author"}},  # a kind, but no a and b to fill its templates
    {
        "id": "hamlet_author",
        "prompt": "Hamlet was written by",
        "completion": " William Shakespeare",
        "tags": {"group": "hamlet_author", "lang": "en", "kind": "author", "a": "Hamlet", "b": "William Shakespeare"},
    },
]


def write_quotes_csv(path, n_glosses: int = 250) -> None:
    """Columns quote_id, quote, author: real quotations and WordNet glosses re-labelled as quotes."""
    from influence.inputs.corpus import read_wordnet_glosses

    glosses = read_wordnet_glosses().head(n_glosses)
    rows = [(author, text) for author, text in QUOTES] + [("WordNet", text) for text in glosses["text"]]
    pd.DataFrame(
        {
            "quote_id": [f"Q{i:05d}" for i in range(len(rows))],
            "quote": [text for _, text in rows],
            "author": [author for author, _ in rows],
        }
    ).to_csv(path, index=False)


def byo_config(tmp, run: str, queries: list) -> None:
    (tmp / f"queries_{run}.yaml").write_text(yaml.safe_dump(queries, allow_unicode=True, sort_keys=False))
    config = {
        "run": run,
        "model": {"source": str(tmp / "model")},
        "corpus": {"path": str(tmp / "quotes.csv"), "text_field": "quote", "id_field": "quote_id", "max_tokens": 32},
        "queries": str(tmp / f"queries_{run}.yaml"),
        "fitting": {"n_sequences": 64, "batch_size": 16},
        "tfidf": {"top_k": 20, "n_features": 65536},
        "scoring": {"query_rank": 8, "n_shards": 1, "batch_size": 16, "top_n": 5},
        "analysis": {
            "n_queries": 2,
            "sample_size": 40,
            "true_k": 5,
            "ranks": [1, 8],
            "estimators": ["ekfac", "identity"],
        },
        "resources": {"mem_mb": 2000, "runtime": 10},
    }
    path = tmp / f"config_{run}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("byo")
    build_tiny_model(tmp / "model")
    write_quotes_csv(tmp / "quotes.csv")
    return tmp


@pytest.fixture(scope="module", params=["untagged", "partial"])
def byo_run(request, workdir):
    """(results dir, snakemake's output): the whole default target of one user's run."""
    queries = {"untagged": UNTAGGED, "partial": PARTIAL}[request.param]
    config = byo_config(workdir, request.param, queries)
    result = snakemake("--cores", 2, "--configfile", config, "--directory", workdir)
    return request.param, workdir / "results" / request.param, result.stdout + result.stderr


def test_the_run_ends_with_its_report(byo_run):
    name, results, _ = byo_run
    queries = {"untagged": UNTAGGED, "partial": PARTIAL}[name]
    html = (results / "scores" / SETTING / "report.html").read_text()
    assert all(q["id"] in html for q in queries)
    top = pd.read_parquet(results / "scores" / SETTING / "top.parquet")
    assert top["seq_id"].str.match(r"Q\d{5}$").all()  # the corpus's own ids, from id_field
    assert set(top["query_id"]) == {q["id"] for q in queries}


def test_every_figure_is_drawn_or_says_why_not(byo_run):
    name, results, _ = byo_run
    figures = results / "figures" / SETTING
    captions = json.loads((figures / "captions.json").read_text())
    log = (results / "logs" / SETTING / "paper_figures.log").read_text()
    assert set(captions) == set(PAPER_FIGURES)
    for figure in PAPER_FIGURES:
        assert (figures / f"{figure}.png").stat().st_size > 1000
        assert (figures / f"{figure}.parquet").exists()
    drawn = {"sparsity", "top_share", "layer_shares"} | ({"phrase_order"} if name == "partial" else set())
    tables = {figure: pd.read_parquet(figures / f"{figure}.parquet") for figure in PAPER_FIGURES}
    for figure in drawn:
        assert len(tables[figure]) and not captions[figure].startswith("Skipped"), figure
    why = {  # the tag each skipped analysis lacks, named in its caption and in the log
        "untagged": {"cross_lingual": "`group`", "query_flip": "`group`", "phrase_order": "`kind`"},
        "partial": {"cross_lingual": "translation", "query_flip": "`order: flipped`"},
    }[name]
    for figure, missing in why.items():
        assert tables[figure].empty and captions[figure].startswith("Skipped"), figure
        assert missing in captions[figure], captions[figure]
        assert f"{figure} skipped" in log and missing in log, log
    if name == "partial":
        summary = tables["phrase_order"]
        assert set(summary["query_id"]) == {"hamlet_author"}  # the one query with kind, a and b
        assert "other_fact" not in set(summary["group"])  # no other fact to compare with


def test_probes_and_sample_analyses(byo_run):
    name, results, _ = byo_run
    probes = pd.read_parquet(results / "scores" / SETTING / "probes.parquet")
    assert list(probes.columns) == ["query_id", "seq_id", "influence", "fact_id", "group", "template", "text"]
    if name == "untagged":
        assert probes.empty
        log = (results / "logs" / SETTING / "score_probes.log").read_text()
        assert "no probes" in log and "`kind`" in log, log
    else:
        assert set(probes["fact_id"]) == {"hamlet_author"} and probes["text"].str.contains("Hamlet|Shakespeare").all()
    sample = next((results / "analysis").iterdir())
    for figure in SAMPLE_FIGURES:
        assert (sample / f"{figure}.png").stat().st_size > 1000


def test_docs_name_what_each_tag_enables():
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert "skipped" in text.lower()


def test_a_model_sweep_on_untagged_queries_says_which_scale_figures_it_skips(workdir):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(workdir / "model")
    torch.manual_seed(1)
    wider = LlamaConfig(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(wider).save_pretrained(workdir / "wider")
    tokenizer.save_pretrained(workdir / "wider")
    config = yaml.safe_load(byo_config(workdir, "untagged_scale", UNTAGGED).read_text())
    config["sweep"] = {
        "models": {"small": {"source": str(workdir / "model")}, "wider": {"source": str(workdir / "wider")}}
    }
    path = workdir / "config_untagged_scale.yaml"
    path.write_text(yaml.safe_dump(config))
    snakemake("--cores", 2, "--configfile", path, "--directory", workdir, "results/untagged_scale/scale/captions.json")
    scale = workdir / "results" / "untagged_scale" / "scale"
    captions = json.loads((scale / "captions.json").read_text())
    log = (workdir / "results" / "untagged_scale" / "logs" / "scale_figures.log").read_text()
    for name, missing in (("scale_cross_lingual", "`group`"), ("scale_phrase_order", "`kind`")):
        assert captions[name].startswith("Skipped") and missing in captions[name], captions[name]
        assert f"{name} skipped" in log and (scale / f"{name}.png").stat().st_size > 1000
    assert not captions["scale_sparsity"].startswith("Skipped")
