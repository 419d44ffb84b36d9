"""tunebench used as a Snakemake module from another repository (`use rule * from tunebench as tb_*`): the
outer workflow names the study; the shipped files (lexicon, published anchors) come from tunebench's copy."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.integration

OUTER = f'''configfile: "study.yaml"


module tunebench:
    snakefile:
        "{REPO / "Snakefile"}"
    config:
        config


use rule * from tunebench as tb_*
'''


@pytest.fixture
def outer(tmp_path):
    """An outer workflow in a folder of its own (no data/ or config/ of tunebench's there): two baselines on FPB
    and SemEval, the data named by absolute path."""
    smoke = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    datasets = {name: {**smoke["datasets"][name], "path": str(REPO / smoke["datasets"][name]["path"])}
                for name in ("fpb", "semeval17_headlines")}
    study = {"datasets": datasets, "methods": {"majority": {"strategy": "majority"},
                                               "lm_dictionary": {"strategy": "lm_dictionary"}},
             "study": [{"datasets": list(datasets), "methods": ["majority", "lm_dictionary"]}],
             "report": {"comparisons": [["lm_dictionary", "majority"]], "bootstrap_samples": 100}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    (tmp_path / "Snakefile").write_text(OUTER)
    return tmp_path


def snakemake(folder, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=folder,
                          capture_output=True, text=True, timeout=600)


def test_the_workflow_runs_as_a_module_of_another_one(outer):
    dry = snakemake(outer, "-n", "--quiet", "rules")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "tb_prepare" in dry.stdout and "tb_run_baseline" in dry.stdout and "tb_report" in dry.stdout
    done = snakemake(outer)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (outer / "results" / "runs" / "semeval17_headlines" / "none" / "lm_dictionary" / "seed0"
            / "metrics.json").exists()
    report = (outer / "results" / "report.md").read_text()
    assert "semeval17_headlines" in report and "lm_dictionary" in report
    assert not (outer / "data").exists()   # the lexicon and the anchors came from tunebench's own copy
