"""Progress with an ETA: the study's line (`--logger tunebench`, tunebench.progress.StudyProgress) and the step
lines long jobs write to their logs (tunebench.progress.report)."""
from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import time

import pytest

from conftest import REPO, make_data_workdir, run_snakemake, snakemake_cmd
from tunebench import config as tbconfig
from tunebench import estimate as est
from tunebench import progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_durations_read_as_seconds_minutes_or_hours():
    assert [progress.duration(s) for s in (0, 44.6, 60, 192, 3599, 3900, 7260)] == \
        ["0s", "45s", "1m00s", "3m12s", "59m59s", "1h05m", "2h01m"]


def test_the_eta_scales_the_work_left_by_the_finished_jobs_ratio(monkeypatch):
    monkeypatch.setattr(progress, "PRIOR_S", 0.0)
    # finished jobs took twice their estimate: 2 waiting jobs of 100 s and a running one of 100 s, 30 s in,
    # leave 200 + 200 + 170 s of work for 2 slots
    eta = progress.eta_seconds([100.0, 100.0], [(100.0, 30.0)], [(50.0, 100.0), (50.0, 100.0)], parallel=2)
    assert eta == pytest.approx((200 + 200 + 170) / 2)


def test_the_eta_is_never_shorter_than_the_longest_job_left():
    assert progress.eta_seconds([], [(300.0, 0.0)], [], parallel=2) == pytest.approx(300.0)
    assert progress.eta_seconds([], [], [], parallel=2) == 0.0


def test_a_quick_first_job_barely_moves_the_ratio():
    # a 15 s estimate done in 1 s: the ratio is (1 + PRIOR_S) / (15 + PRIOR_S), not 1/15
    eta = progress.eta_seconds([100.0], [], [(15.0, 1.0)], parallel=1)
    assert eta == pytest.approx(100 * (1 + progress.PRIOR_S) / (15 + progress.PRIOR_S))


def test_the_line_counts_names_the_running_jobs_and_says_the_eta():
    line = progress.status_line(12, 40, ["a x/y", "b z", "c", "d"], 192, 485, failed=1)
    assert line == "12/40 jobs done, 1 failed, 4 running: a x/y, b z +2 more | 3m12s elapsed | ETA 8m05s"
    assert progress.status_line(0, 0, [], 3, None) == "0/0 jobs done, 0 running | 3s elapsed | ETA ?"


def test_the_study_line_follows_snakemakes_jobs_and_their_estimates():
    clock = Clock()
    costs = {"finetune_encoder": {("d", "m", "lora", "0"): 100.0, ("d", "m", "lora", "1"): 100.0}}
    study = progress.StudyProgress(costs, default_s=10.0, parallel=2, free=frozenset({"all"}), clock=clock)
    assert study.line() == "0/0 jobs done, 0 running | 0s elapsed | ETA ?"   # before Snakemake's DAG
    study.plan({"prepare": 1, "finetune_encoder": 2, "all": 1})
    study.job_started(1, "prepare", {"dataset": "d"})
    clock.now = 10.0
    study.job_finished(1)   # as estimated: the ratio stays 1; 2 x 100 s left on 2 slots
    assert study.line() == "1/4 jobs done, 0 running | 10s elapsed | ETA 1m40s"
    study.job_started(2, "finetune_encoder", {"dataset": "d", "model": "m", "method": "lora", "seed": 0})
    clock.now = 40.0
    # 70 s left of the running job and 100 s of the waiting one: 85 s on 2 slots, but no less than 100 s
    assert study.line() == "1/4 jobs done, 1 running: finetune_encoder d/m/lora/0 | 40s elapsed | ETA 1m40s"
    study.job_failed(2)
    assert study.line().startswith("1/4 jobs done, 1 failed, 0 running")


def test_study_costs_are_the_estimates_jobs_by_rule(monkeypatch, tmp_path):
    """Every job of the smoke study priced as tunebench.estimate prices it: the costs add up to its estimate."""
    monkeypatch.setattr(est, "cached_calibration", lambda threads: None)   # as on the reference machine
    reference = REPO / "docs" / "results"
    costs, overhead = est.study_costs(REPO / "config" / "smoke.yaml", reference, tmp_path / "results")
    meta = json.loads((reference / "calibration.json").read_text())
    cfg = tbconfig.load(REPO / "config" / "smoke.yaml")
    expected = est.estimate(cfg, reference, meta, cores=2, results=tmp_path / "results")
    assert sum(s for jobs in costs.values() for s in jobs.values()) == pytest.approx(expected.wall_s * 2)
    assert overhead == meta["job_overhead_s"]
    run = next(iter(costs["run_baseline"]))
    assert len(run) == 4 and run[1] == "none" and run[3] == "0"   # (dataset, model, method, seed) as wildcards
    skipped = est.study_costs(REPO / "config" / "smoke.yaml", reference, tmp_path / "results",
                                   overrides={"skip_methods": ["tfidf"]})[0]
    assert not any(key[2] == "tfidf" for key in skipped["run_baseline"])


def test_a_long_loop_logs_its_steps_with_an_eta_and_a_short_one_nothing():
    clock, out = Clock(), io.StringIO()
    for _ in progress.report(range(10), "prompt batch", every_s=30, stream=out, clock=clock):
        clock.now += 10   # each batch takes 10 s
    assert out.getvalue().splitlines() == ["prompt batch 3/10, 30s elapsed, ETA 1m10s",
                                           "prompt batch 6/10, 1m00s elapsed, ETA 40s",
                                           "prompt batch 9/10, 1m30s elapsed, ETA 10s",
                                           "prompt batch 10/10 done in 1m40s"]
    quick = io.StringIO()
    assert list(progress.report([1, 2], stream=quick)) == [1, 2] and quick.getvalue() == ""


def test_the_logger_reads_the_study_from_snakemakes_command_line():
    from snakemake_logger_plugin_tunebench import command_line_study

    configfile, overrides, cores = command_line_study(
        ["--cores", "3", "--configfile", "config/smoke.yaml", "--config", "skip_methods=[qlora]", "seeds=[0, 1]"])
    assert configfile.is_absolute() and configfile.name == "smoke.yaml"
    assert overrides == {"skip_methods": ["qlora"], "seeds": [0, 1]} and cores == 3
    configfile, overrides, cores = command_line_study(["--cores=all"])
    assert str(configfile) == "config/config.yaml" and overrides == {} and cores == (os.cpu_count() or 1)


# ---- the plugin in a real Snakemake run ----------------------------------------------------------------------

BASELINE_RUNS = [f"results/runs/fpb/none/{method}/seed0/metrics.json" for method in ("majority", "tfidf")]
LINE = r"(\d+)/(\d+) jobs done, \d+ running.* \| \d+s elapsed \| ETA (\d+s|\d+m\d\ds)"


@pytest.mark.integration
def test_off_a_terminal_each_finished_job_prints_the_progress_line(tmp_path):
    workdir = make_data_workdir(tmp_path / "study")
    proc = run_snakemake(workdir, "--logger", "tunebench", "--cores", "2", *BASELINE_RUNS)
    lines = [m.groups() for m in re.finditer(LINE, proc.stderr)]
    assert [(done, total) for done, total, _ in lines] == [("1", "3"), ("2", "3"), ("3", "3")], proc.stderr
    assert lines[-1][2] == "0s"
    assert "no per-job estimates" not in proc.stderr   # the smoke study was priced by tunebench.estimate


@pytest.mark.integration
def test_at_a_terminal_the_progress_line_is_live(tmp_path):
    workdir = make_data_workdir(tmp_path / "study")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(snakemake_cmd(workdir, "--logger", "tunebench", "--cores", "2", *BASELINE_RUNS),
                            cwd=workdir, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env={**os.environ, "TERM": "xterm", "COLUMNS": "160"})
    os.close(follower)
    screen, deadline = b"", time.monotonic() + 300
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 1)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:   # the other end closed: Snakemake is done
                break
            if not chunk:
                break
            screen += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    assert "Workflow Progress" in text                       # Rich's live panel ...
    assert re.search(r"0/3 jobs done, \d running", text), text[-3000:]   # ... with our line, drawn before a job ends
    assert re.search(r"3/3 jobs done, 0 running \| \d+s elapsed \| ETA 0s", text)   # and kept at the end
