"""The conda environments (envs/*.yaml, for `--sdm conda` on GPU clusters) list the same packages as
pyproject.toml (the default pip install)."""

from __future__ import annotations

import re
import tomllib

import yaml
from tunebench import families

from conftest import REPO

# Packages that run the workflow itself (the Snakemake process), not its jobs; pytest is a test extra.
WORKFLOW_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}
CONDA_NAMES = {"pytorch": "torch"}   # conda's name → PyPI's name


def name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def env_packages() -> set[str]:
    names = set()
    for path in sorted((REPO / "envs").glob("*.yaml")):
        for dep in yaml.safe_load(path.read_text())["dependencies"]:
            if isinstance(dep, dict):
                names |= {name(d) for d in dep.get("pip", [])}
            elif name(dep) not in ("python", "pip"):
                names.add(CONDA_NAMES.get(name(dep), name(dep)))
    return names


def test_conda_envs_and_pyproject_list_the_same_packages():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_names = {name(r) for r in project["dependencies"]} - WORKFLOW_ONLY
    assert pip_names == env_packages()


def test_every_rule_names_an_existing_conda_env():
    rules = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    named = set(re.findall(r'"\.\./\.\./envs/(\w+)\.yaml"', rules))           # conda: directives
    named |= {fam.env for fam in families.families()}                         # the method families' rules
    assert named == {p.stem for p in (REPO / "envs").glob("*.yaml")}
