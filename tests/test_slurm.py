"""profiles/slurm on a real single-node SLURM cluster (tests/slurm/cluster.sh): every job rule that is not local
goes through sbatch to its partition, the GPU rules ask for an A100 with the profile's CPUs, memory and time,
and the results equal those of the local smoke run. Plus quick checks of how the profiles read their settings.

Without root the cluster cannot be set up and the SLURM test skips, unless TUNEBENCH_REQUIRE_SLURM=1 (CI).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from conftest import REPO, make_workdir, snakemake_cmd

CLUSTER = REPO / "tests/slurm/cluster.sh"
GPU_RULES = {"finetune_encoder", "tune_encoder", "finetune_generative", "tune_generative", "prompt_llm",
             "encode_features", "embed_fewshot"}
LOCAL_RULES = {"prepare", "aggregate", "report"}

# A slice of the smoke study with one job of each kind: a CPU baseline, tokenisation (CPU), cached features,
# a head and an embedding few-shot run (GPU). Each SLURM job costs seconds of start-up, so few jobs.
# The two baselines go to SLURM as one group job (profiles/slurm: groups, group-components).
RUNS = {"fpb/none/majority/seed0": "run_baseline", "fpb/none/tfidf/seed0": "run_baseline",
        "fpb/tiny_bert/head/seed0": "finetune_encoder", "fpb/tiny_bert/few_shot_k1/seed0": "embed_fewshot"}
EXPECTED_JOBS = {"run_baseline": 1, "tokenize": 1, "encode_features": 1, "finetune_encoder": 1, "embed_fewshot": 1}
GROUPS = {"baselines": "run_baseline"}
GROUP_SIZE = {"run_baseline": 2}


def slurm_study() -> dict:
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["datasets"] = {"fpb": config["datasets"]["fpb"]}
    config["methods"] = {m: config["methods"][m] for m in ("majority", "tfidf", "head", "few_shot_k1")}
    config["study"] = [{"datasets": ["fpb"], "methods": ["majority", "tfidf"]},
                       {"datasets": ["fpb"], "models": ["tiny_bert"], "methods": ["head", "few_shot_k1"]}]
    config["report"]["comparisons"] = [["head", "majority"]]
    return config


@pytest.fixture(scope="module")
def cluster():
    required = os.environ.get("TUNEBENCH_REQUIRE_SLURM") == "1"
    start = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True)
    if start.returncode == 3 and not required:
        pytest.skip(f"no SLURM cluster here: {start.stderr.strip()}")
    if start.returncode != 0:
        pytest.fail(f"cluster.sh start failed ({start.returncode}):\n{start.stderr[-3000:]}")
    yield
    subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, text=True)


def slurm_jobs(run_id: str) -> list[dict[str, str]]:
    """The cluster's record of each job of one Snakemake run (finished jobs stay listed for MinJobAge)."""
    out = subprocess.run(["scontrol", "--oneliner", "show", "job"], capture_output=True, text=True,
                         check=True).stdout
    jobs = [dict(re.findall(r"(\w[\w/:]*)=(\S*)", line)) for line in out.splitlines() if line.strip()]
    return [job for job in jobs if job.get("JobName") == run_id]


def rule_of(job: dict[str, str]) -> str:
    """The plugin names each job after the run and puts `rule_<name>_wildcards_<values>` in its comment, or
    `rule_<group>_<rules>` for a group job (mapped to its rule here)."""
    name = re.match(r"rule_(\w+?)(?:_wildcards_|$)", job["Comment"]).group(1)
    group = name.split("_", 1)[0]
    return GROUPS.get(group, name) if name.startswith(f"{group}_") and group in GROUPS else name


@pytest.mark.slurm
def test_smoke_slice_through_slurm_matches_the_local_run(cluster, smoke_run, tmp_path_factory):
    local_dir, _ = smoke_run
    workdir = tmp_path_factory.mktemp("slurm")
    (workdir / "tiny_models").symlink_to(local_dir / "tiny_models")  # the very model the local run used
    make_workdir(workdir)
    (workdir / "slurm_study.yaml").write_text(yaml.safe_dump(slurm_study(), sort_keys=False))

    cmd = snakemake_cmd(workdir, "--profile", str(REPO / "profiles/slurm"),
                        "--profile", str(REPO / "tests/slurm/test_profile.yaml"), configfile="slurm_study.yaml")
    env = {**{k: v for k, v in os.environ.items() if k != "TUNEBENCH_SLURM_ACCOUNT"},  # the test cluster has none
           "TUNEBENCH_CPU_PARTITION": "cpu", "TUNEBENCH_GPU_PARTITION": "gpu"}
    # A status query that never sees its jobs finish would wait forever: bound it (it takes 1-2 minutes).
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]

    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    jobs = slurm_jobs(run_id)
    rules = [rule_of(job) for job in jobs]
    assert {rule: rules.count(rule) for rule in set(rules)} == EXPECTED_JOBS
    assert not LOCAL_RULES & set(rules)
    requested = profile_resources()
    for rule, job in zip(rules, jobs):
        asked = dict(requested.get(rule, requested["default"]))
        members = GROUP_SIZE.get(rule, 1)   # a group job asks for the sum of its members' CPUs and memory
        asked["mem_mb"] = str(int(asked["mem_mb"]) * members)
        assert int(job["NumCPUs"]) >= members, rule
        assert job["JobState"] == "COMPLETED", (rule, job["JobState"])
        assert job["Requeue"] == "1", rule  # slurm-requeue: the cluster itself requeues nothing (JobRequeue=0)
        assert job["MinMemoryNode"] == f"{asked['mem_mb']}M", rule
        assert job["TimeLimit"] == f"{int(asked['runtime']) // 60:02d}:{int(asked['runtime']) % 60:02d}:00", rule
        if rule in GPU_RULES:
            assert job["Partition"] == "gpu", rule
            assert job["TresPerJob"] == "gres:gpu:a100:1", rule
            assert job["CpusPerTres"] == f"gres:gpu:{asked['cpus_per_gpu']}", rule
        else:
            assert job["Partition"] == "cpu", rule
            assert "gpu" not in job.get("TresPerJob", ""), rule

    for name in ("runs.csv", "summary.csv", "report.md", "report.html"):
        assert (workdir / "results" / name).stat().st_size > 0, name
    for run, rule in RUNS.items():
        ours, local = workdir / "results/runs" / run, local_dir / "results/runs" / run
        assert_frame_equal(pl.read_parquet(ours / "predictions.parquet"),
                           pl.read_parquet(local / "predictions.parquet"))
        metrics = json.loads((ours / "metrics.json").read_text())
        assert metrics["metrics"] == json.loads((local / "metrics.json").read_text())["metrics"], run
        # The run itself knows it ran inside that SLURM job.
        job = next(job for job in jobs if job["JobId"] == metrics["provenance"]["slurm"]["job_id"])
        assert (rule_of(job), job["Partition"]) == (rule, metrics["provenance"]["slurm"]["job_partition"]), run
    baseline_jobs = {json.loads((workdir / "results/runs" / run / "metrics.json").read_text())["provenance"]["slurm"]
                     ["job_id"] for run, rule in RUNS.items() if rule == "run_baseline"}
    assert len(baseline_jobs) == 1   # both baselines ran inside one SLURM job


# --- The profiles themselves, without a cluster ---------------------------------------------------------------

def profile_args(path, argv=("snakemake",), env=None) -> dict:
    """The command-line arguments a profile file turns into, as Snakemake parses it."""
    code = ("import json, sys; from snakemake.profiles import ProfileConfigFileParser; "
            "print(json.dumps(ProfileConfigFileParser().parse(open(sys.argv[1]))))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEBENCH_", "SNAKEMAKE_PROFILE"))}
    proc = subprocess.run([sys.executable, "-c", code, str(path), *argv[1:]], capture_output=True, text=True,
                          check=True, env={**clean, **(env or {})})
    return json.loads(proc.stdout)


def profile_resources(env=None) -> dict[str, dict[str, str]]:
    """Rule → resource → value as profiles/slurm sets them; "default" holds its default resources."""
    args = profile_args(REPO / "profiles/slurm/config.yaml", env=env)
    resources = {"default": dict(item.split("=", 1) for item in args["default-resources"])}
    for item in args["set-resources"]:
        rule, setting = item.split(":", 1)
        name, value = setting.split("=", 1)
        resources.setdefault(rule, {})[name] = value
    return resources


def test_slurm_profile_takes_partitions_and_account_from_the_environment():
    unset = profile_resources()
    assert not {"slurm_partition", "slurm_account"} & set(unset["default"])  # the cluster's defaults
    assert all(unset[rule]["slurm_partition"] == "'gpu'" for rule in GPU_RULES)

    site = profile_resources(env={"TUNEBENCH_CPU_PARTITION": "all", "TUNEBENCH_GPU_PARTITION": "a100-80g",
                                  "TUNEBENCH_SLURM_ACCOUNT": "0123"})
    # Quoted, so that Snakemake keeps them strings (`all` is a Python builtin, 0123 not a number).
    assert (site["default"]["slurm_partition"], site["default"]["slurm_account"]) == ("'all'", "'0123'")
    for rule in GPU_RULES:
        assert (site[rule]["slurm_partition"], site[rule]["gpu"], site[rule]["gpu_model"]) == ("'a100-80g'", "1",
                                                                                                "a100"), rule
        assert "slurm_extra" not in site[rule], rule


def test_default_profile_leaves_cores_to_a_cluster_profile():
    laptop = profile_args(REPO / "profiles/default/config.yaml", argv=("snakemake", "-n"))
    assert laptop["cores"] == "all"
    cluster = profile_args(REPO / "profiles/default/config.yaml", argv=("snakemake", "--profile", "slurm"))
    assert "cores" not in cluster
