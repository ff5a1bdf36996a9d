"""envs/*.yaml are valid conda environments that pin the same packages and ranges as requirements.txt."""

import re

import pytest
import yaml
from helpers import ROOT

# conda-forge names of PyPI packages that differ (the -minimal / -base variants skip GUI and extras)
CONDA_NAMES = {"torch": "pytorch", "snakemake": "snakemake-minimal", "matplotlib": "matplotlib-base"}
# needed only by the Snakemake process that submits jobs, never inside a rule's environment
DRIVER_ONLY = {"snakemake-executor-plugin-slurm"}
SPEC = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(.*)$")


def _specs(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, spec = SPEC.match(line).groups()
            out[name.lower()] = spec.replace(" ", "")
    return out


@pytest.mark.parametrize("env_file", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_environment_matches_requirements(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert set(env) <= {"name", "channels", "dependencies"}, f"{env_file.name}: unknown top-level keys"
    assert env["channels"] and all(isinstance(c, str) for c in env["channels"])
    conda = _specs(d for d in env["dependencies"] if isinstance(d, str))
    assert conda.pop("python").startswith("=3.")
    pip = _specs((ROOT / "requirements.txt").read_text().splitlines())
    wanted = {CONDA_NAMES.get(name, name): spec for name, spec in pip.items() if name not in DRIVER_ONLY}
    assert conda == wanted, f"{env_file.name} and requirements.txt disagree"
