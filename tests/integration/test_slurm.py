"""`snakemake --profile slurm` on a real single-node SLURM cluster, checked against the local run.

The harness (slurm_cluster.sh) installs Debian's munge, slurmctld and slurmd, and starts them with
two file-backed fake GPUs, so the GPU rules' `--gpus=1` requests are accepted on this GPU-less node
and the workflow runs unchanged (the jobs find no CUDA device and use the CPU).
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import GPU_RULES, ROOT, planned_jobs
from safetensors.numpy import load_file

HARNESS = Path(__file__).with_name("slurm_cluster.sh")
LOCAL_RULES = {"all", "report", "paper_figures", "sample_figures"}

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("the SLURM test starts munge/slurmctld/slurmd and needs root; deselect it with -m 'not slurm'")
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        pytest.skip("the SLURM test installs Debian's slurmctld and slurmd with apt-get, and neither is here")
    env = {**os.environ, "SLURM_FAKE_GPUS": "2"}
    started = subprocess.run(["bash", str(HARNESS)], env=env, capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr
    yield
    subprocess.run(["bash", str(HARNESS), "stop"], env=env, capture_output=True)


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tiny_run, tmp_path_factory):
    """The tiny config run with the repository's slurm profile, from the repository root."""
    _, local_config, _ = tiny_run
    config = yaml.safe_load(local_config.read_text())
    config["resources"]["threads"] = 1  # the node has 2 CPUs: two jobs at a time
    config["fitting"]["n_shards"] = 2  # sharded fitting on the cluster, unsharded locally
    workdir = tmp_path_factory.mktemp("slurm")
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    # SIGINT is the signal that stops a waiting Snakemake; 15 min is 6× what the run takes here.
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "30",
        "900",
        "snakemake",
        "--profile",
        "slurm",
        "--configfile",
        str(config_path),
        "--directory",
        str(workdir),
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return workdir, config_path, workdir / "results" / "tiny"


def slurm_jobs(workdir: Path) -> pd.DataFrame:
    """SLURM's own record of the jobs run from `workdir`: rule (from the plugin's comment), state, GPUs."""
    out = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%k|%T|%Z|%i"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    jobs = pd.DataFrame(rows, columns=["comment", "state", "workdir", "job_id"])
    jobs = jobs[jobs["workdir"] == str(workdir)].copy()
    jobs["rule"] = jobs["comment"].str.removeprefix("rule_").str.replace(r"_wildcards_.*$", "", regex=True)
    jobs["gres"] = [requested_gpus(job_id) for job_id in jobs["job_id"]]
    return jobs


def requested_gpus(job_id: str) -> str:
    record = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return next((f.split("=", 1)[1] for f in record.split() if f.startswith("TresPerJob=")), "")


def test_every_compute_rule_ran_as_a_slurm_job(slurm_run):
    workdir, config, _ = slurm_run
    jobs = slurm_jobs(workdir)
    assert (jobs["state"] == "COMPLETED").all(), jobs
    planned = pd.Series(planned_jobs("--forceall", "--configfile", config, "--directory", workdir)).sort_index()
    expected = planned[~planned.index.isin(LOCAL_RULES)]
    assert len(expected) >= 10 and "score_shard" in expected
    pd.testing.assert_series_equal(jobs["rule"].value_counts().sort_index(), expected, check_names=False)
    gpu_rules = GPU_RULES
    for rule, gres in zip(jobs["rule"], jobs["gres"]):
        assert ("gpu:1" in gres) == (rule in gpu_rules), (rule, gres)


def test_slurm_results_equal_the_local_run(slurm_run, tiny_run):
    """Sharded fitting on SLURM against the unsharded local run: factors, scores and tokens to float tolerance."""
    _, _, local = tiny_run
    _, _, remote = slurm_run
    for name in ("covariance", "eigen", "lambda"):
        a, b = (load_file(root / "factors" / "layers~mlp" / f"{name}.safetensors") for root in (local, remote))
        assert a.keys() == b.keys()
        for key in (k for k in a if not k.endswith("eigenvectors")):  # eigenvectors are defined up to sign
            np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-6 * np.abs(a[key]).max(), err_msg=key)
    setting = "layers~mlp_estimator~ekfac_damping~relative-0.1_rank~8_topk~25"
    for table, keys in (
        ("scores", ["query_id", "seq_id"]),
        ("tokens", ["query_id", "seq_id", "position"]),
        ("probes", ["query_id", "seq_id"]),
    ):
        a, b = (
            pd.read_parquet(root / "scores" / setting / f"{table}.parquet").sort_values(keys, ignore_index=True)
            for root in (local, remote)
        )
        assert_tables_close(a, b, ignore=["influence_rank"])
    for figure in ("sparsity", "phrase_order"):
        assert (remote / "figures" / setting / f"{figure}.png").stat().st_size > 10_000


def assert_tables_close(a: pd.DataFrame, b: pd.DataFrame, ignore: list[str]) -> None:
    """Same rows and labels; numbers equal to float tolerance (ranks of near-ties may swap)."""
    a, b = a.drop(columns=ignore, errors="ignore"), b.drop(columns=ignore, errors="ignore")
    numeric = a.select_dtypes("number").columns
    pd.testing.assert_frame_equal(b.drop(columns=numeric), a.drop(columns=numeric))
    np.testing.assert_allclose(
        b[numeric].to_numpy(float),
        a[numeric].to_numpy(float),
        rtol=1e-3,
        atol=1e-5 * np.nanmax(np.abs(a[numeric].to_numpy(float))),
    )
