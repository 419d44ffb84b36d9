"""What every result carries: package versions, git commit, hardware, SLURM job, times."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ["tunebench", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "tokenizers",
            "polars", "pyarrow", "numpy", "scipy", "scikit-learn", "snakemake"]


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (commit + ("-dirty" if dirty else "")) or None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "gpu": None, "gpu_count": 0}
    torch = sys.modules.get("torch")  # only if the run imported it: baselines never pay torch's import time
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def slurm() -> dict | None:
    if "SLURM_JOB_ID" not in os.environ:
        return None
    keys = ["SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURM_JOB_NODELIST", "SLURM_CPUS_PER_TASK",
            "SLURM_GPUS_ON_NODE", "SLURM_RESTART_COUNT"]
    info = {k.lower().removeprefix("slurm_"): os.environ.get(k) for k in keys}
    # Inside a job step SLURM_JOB_GPUS is unset; the step's own variables say which GPUs it was given.
    info["gpus"] = os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS") or os.environ.get(
        "CUDA_VISIBLE_DEVICES")
    return info


def collect() -> dict:
    return {"packages": package_versions(), "git_commit": git_commit(), "hardware": hardware(), "slurm": slurm()}
