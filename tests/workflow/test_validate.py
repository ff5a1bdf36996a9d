"""`snakemake validate` on the tiny run: the whole chain through the real CLI, a kill mid-run that resumes with the
finished further-trainings, bit-identical tables from a run without any cache, and settings refused by name."""

import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from helpers import IDENTICAL_SEQ, NO_CONTROLLER_ENV, ROOT, TINY_QUERIES, snakemake
from influence.validation.measures import TABLE_COLUMNS

pytestmark = pytest.mark.workflow  # runs the real Snakemake workflow end to end

SETTING = "layers~mlp_estimator~ekfac_damping~relative-0.1_rank~8_topk~25"
VALIDATE = {
    "n_queries": None,
    "top_k": 3,
    "n_random_candidates": 10,
    "n_controls": 4,
    "n_subsets": 6,
    "n_parts": 2,
    "recipe": {"lr": 0.003, "epochs": 1, "batch_size": 4},
}
TABLES = ["validation.parquet", "per_query.parquet", "noise.parquet", "scores.parquet", "plan.parquet"]


def _config(tmp, local_config, name="validate", **validate):
    config = yaml.safe_load(local_config.read_text())
    config["validate"] = {**VALIDATE, **validate}
    path = tmp / f"config_{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _tables(directory) -> dict:
    return {name: pd.read_parquet(directory / name) for name in TABLES}


@pytest.fixture(scope="module")
def validated(tiny_run):
    """validate killed once mid-way through its further-trainings, then resumed: (workdir, config, its directory)."""
    tmp, local_config, results = tiny_run
    config = _config(tmp, local_config)
    directory = results / "validation" / SETTING
    cache = directory / "retrains"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "validate",
        "--cores",
        "2",
    ]  # as the reruns: one thread count
    cmd += ["--configfile", str(config), "--directory", str(tmp)]
    job = subprocess.Popen(cmd, cwd=ROOT, env=NO_CONTROLLER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)  # fmt: skip
    deadline = time.time() + 600
    while time.time() < deadline and len(list(cache.glob("*.npy"))) < 3 and job.poll() is None:
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)  # a hard kill: Snakemake cannot clean up
    job.wait()
    finished = len(list(cache.glob("*.npy")))
    assert finished >= 3 and not (directory / "validation.parquet").exists()
    snakemake("--unlock", "--configfile", config, "--directory", tmp)
    snakemake("validate", "--cores", 2, "--rerun-incomplete", "--configfile", config, "--directory", tmp)
    return tmp, config, directory, finished


def test_validate_writes_the_table_verdict_figure_and_report(validated):
    _, _, directory, _ = validated
    table = pd.read_parquet(directory / "validation.parquet")
    assert list(table.columns) == TABLE_COLUMNS
    plain = table[table["versus"] == ""]
    methods = ["ekfac", "kfac", "identity", "cosine", "tfidf", "bm25", "repsim", "random"]
    assert plain[plain["measure"] == "proponents"]["method"].tolist() == methods  # the run's estimator first
    assert set(plain[plain["measure"] == "opponents"]["method"]) == {"ekfac", "kfac", "identity", "cosine"}
    assert (plain["n"] == 3).all() and (plain["control_sd"].dropna() > 0).all()
    differences = table[table["measure"] == "proponents_difference"]
    assert set(differences["versus"]) == set(methods) - {"ekfac"} and set(differences["method"]) == {"ekfac"}
    verdict = (directory / "verdict.md").read_text()
    assert verdict.startswith("# Does attribution work on this model and corpus?") and "| EK-FAC |" in verdict
    assert (directory / "validation.png").stat().st_size > 5000
    page = (directory / "report.html").read_text()
    assert 'id="validation"' in page and page.index('id="validation"') < page.index(f'id="{TINY_QUERIES[0]["id"]}"')
    pool = pd.read_parquet(directory / "pool.parquet")
    assert pool["random"].sum() > 0 and pool["seq_id"].is_unique


def test_the_query_text_itself_is_a_top_proponent_and_training_on_it_raises_log_p(validated):
    """The corpus holds the first query's prompt and completion verbatim: every gradient method ranks it in its
    top k, and training on that top k raises the query's log p beyond every random k-set of the pool."""
    _, _, directory, _ = validated
    extremes = pd.read_parquet(directory / "extremes.parquet")
    query = TINY_QUERIES[0]["id"]
    for method in ("ekfac", "kfac", "identity", "cosine"):
        top = extremes[
            (extremes["method"] == method) & (extremes["kind"] == "proponents") & (extremes["query_id"] == query)
        ]
        assert IDENTICAL_SEQ in top["seq_id"].tolist(), method
    values = pd.read_parquet(directory / "per_query.parquet").set_index(["measure", "method", "query_id"])["value"]
    noise = pd.read_parquet(directory / "noise.parquet").set_index("query_id")
    assert values["proponents", "identity", query] > 2 * noise.loc[query, "control_sd"] > 0


def test_a_killed_run_resumes_with_its_trainings_and_matches_a_run_without_cache(validated):
    tmp, config, directory, finished = validated
    logs = "".join(p.read_text() for p in (directory / "logs").glob("validate_train_*.log"))
    assert re.search(r"[1-9]\d* found in the cache", logs), logs
    resumed = _tables(directory)
    for path in directory.rglob("*"):  # everything, the further-training cache included
        if path.is_file():
            path.unlink()
    snakemake("validate", "--cores", 2, "--configfile", config, "--directory", tmp)
    for name, table in _tables(directory).items():
        pd.testing.assert_frame_equal(table, resumed[name], check_exact=True, obj=name)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"fraction": 1.5}, "config key validate.fraction: 1.5 is greater than or equal to the maximum of 1"),
        ({"estimators": ["ekfac", "lissa"]}, "config key validate.estimators.1: 'lissa' is not one of"),
        ({"recipe": {"parameters": "some"}}, "config key validate.recipe.parameters: 'some' is not one of"),
        ({"n_controls": 1}, "config key validate.n_controls: 1 is less than the minimum of 2"),
    ],
)
def test_bad_settings_stop_before_any_work_naming_the_key(tiny_run, change, message):
    """Checked by the schema when the workflow starts; top_k beyond the candidates and a diverging recipe stop in
    the jobs (tests/unit/validation)."""
    tmp, local_config, _ = tiny_run
    config = _config(tmp, local_config, "bad", **change)
    result = snakemake("validate", "--dry-run", "--configfile", config, "--directory", tmp, check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr, result.stderr[-3000:]


def test_the_run_report_gains_the_verdict_and_nothing_else_reruns(validated):
    """Once validate has run, the default target rebuilds only the run's report, with the verdict first."""
    tmp, config, directory, _ = validated
    from helpers import planned_jobs

    assert planned_jobs("--configfile", config, "--directory", tmp) == {"report": 1, "all": 1}
    snakemake("--cores", 2, "--configfile", config, "--directory", tmp)
    page = (directory.parents[1] / "scores" / SETTING / "report.html").read_text()
    assert page.index('id="validation"') < page.index(f'id="{TINY_QUERIES[0]["id"]}"')
    assert planned_jobs("--configfile", config, "--directory", tmp) == {}
