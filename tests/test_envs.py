"""The conda environments (envs/*.yaml, for `--sdm conda` on GPU clusters) list the same packages as
pyproject.toml (the default pip install)."""

from __future__ import annotations

import re
import tomllib

import yaml
from tunebench import families

from conftest import REPO

# Packages that run the workflow itself (the Snakemake process), not its jobs; pytest is a test extra.
WORKFLOW_ONLY = {"snakemake", "snakemake-executor-plugin-slurm", "snakemake-logger-plugin-rich"}
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


def test_the_container_definition_installs_the_default_pins():
    """envs/tunebench.def (the image of `--sdm apptainer`) takes CPU torch at the default install's pin, the
    project with its constraints, the model packages without their declared dependencies, and copies only files
    that exist; the Snakefile's default image is the file the definition's build line writes."""
    definition = (REPO / "envs" / "tunebench.def").read_text()
    torch_pin = re.search(r"^torch==(\S+)$", (REPO / "envs" / "constraints.txt").read_text(), re.M).group(1)
    assert f"--index-url https://download.pytorch.org/whl/cpu torch=={torch_pin}" in definition
    assert "--constraint /opt/tunebench/envs/constraints.txt /opt/tunebench" in definition
    assert "--no-deps --requirement /opt/tunebench/envs/model-packages.txt" in definition
    files = definition.split("%files")[1].split("%post")[0]
    copied = [line.split()[0] for line in files.splitlines() if line.strip()]
    assert copied and all((REPO / path).exists() for path in copied), copied
    image = re.search(r"apptainer build (\S+) envs/tunebench\.def", definition).group(1)
    assert f'container: config.get("container", "{image}")' in (REPO / "Snakefile").read_text()
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["container"]["default"] == image


def test_the_conda_envs_take_conda_forge_only():
    """The `pytorch` channel is retired (no builds after 2.5) and `defaults` has other terms: conda-forge's
    pytorch is the CUDA build where conda sees a GPU driver and the CPU build elsewhere."""
    for path in sorted((REPO / "envs").glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["channels"] == ["conda-forge", "nodefaults"], path.name
