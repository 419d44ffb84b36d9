"""Progress lines with an ETA: inside a long job, and for the whole study.

In a job, wrap the loop over batches or steps:

    for start in progress.report(range(0, len(rows), batch_size), "prompt batch"):

prints `prompt batch 12/40, 1m05s elapsed, ETA 2m31s` to stderr (the rule's log file, logs/<rule>/...) every
30 s and a closing line; a loop done sooner prints nothing.

For the study, `StudyProgress` keeps the line the Snakemake logger plugin draws (`--logger tunebench`, in
workflow/snakemake_logger_plugin_tunebench):

    12/40 jobs done, 2 running: finetune_encoder fpb/minilm/lora/0, prompt_llm ... | 3m12s elapsed | ETA 8m05s

Its ETA: the estimated seconds of the jobs not done yet (tunebench.estimate's cost of each job), scaled by how
long the finished jobs took against their estimates, over the jobs that run side by side (see eta_seconds).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

REPORT_EVERY_S = 30.0
# The measured/estimated ratio starts at 1 with this many seconds of weight, so that a few quick first jobs
# (data preparation, tokenisation) do not swing the ETA.
PRIOR_S = 120.0
RUNNING_SHOWN = 2   # running jobs named on the line; the others are counted


def duration(seconds: float) -> str:
    """45s, 3m12s, 1h05m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ---- inside a job --------------------------------------------------------------------------------------------

def step_line(what: str, done: int, total: int | None, elapsed_s: float) -> str:
    if not total:
        return f"{what} {done}, {duration(elapsed_s)} elapsed"
    eta = elapsed_s / done * (total - done) if done else None
    return (f"{what} {done}/{total}, {duration(elapsed_s)} elapsed, "
            f"ETA {duration(eta) if eta is not None else '?'}")


def report(items, what: str = "batch", every_s: float = REPORT_EVERY_S, stream=None, clock=time.monotonic):
    """Yield `items`, printing a step line to `stream` (stderr) each `every_s` seconds, and a closing line if
    any was printed."""
    total = len(items) if hasattr(items, "__len__") else None
    start = last = clock()
    done, printed = 0, False
    for item in items:
        now = clock()
        if done and now - last >= every_s:
            print(step_line(what, done, total, now - start), file=stream or sys.stderr, flush=True)
            last, printed = now, True
        yield item
        done += 1
    if printed:
        print(f"{what} {done}/{total or done} done in {duration(clock() - start)}", file=stream or sys.stderr,
              flush=True)


# ---- the study -----------------------------------------------------------------------------------------------

def eta_seconds(waiting: list[float], running: list[tuple[float, float]], finished: list[tuple[float, float]],
                parallel: int) -> float:
    """Seconds until the study is done.

    waiting: the estimated seconds of each job not started; running: (estimated, elapsed) of each running job;
    finished: (estimated, measured) of each finished job. Every estimate is scaled by the finished jobs' ratio
    measured/estimated (PRIOR_S of weight at 1); the work left is shared by `parallel` job slots, and no ETA is
    shorter than the longest single job left."""
    ratio = (sum(m for _, m in finished) + PRIOR_S) / (sum(e for e, _ in finished) + PRIOR_S)
    left = [ratio * e for e in waiting] + [max(0.0, ratio * e - elapsed) for e, elapsed in running]
    return max(sum(left) / max(1, parallel), max(left, default=0.0))


def status_line(done: int, total: int, running: list[str], elapsed_s: float, eta_s: float | None,
                failed: int = 0) -> str:
    shown = ", ".join(running[:RUNNING_SHOWN]) + (f" +{len(running) - RUNNING_SHOWN} more"
                                                  if len(running) > RUNNING_SHOWN else "")
    parts = [f"{done}/{total} jobs done" + (f", {failed} failed" if failed else ""),
             f"{len(running)} running" + (f": {shown}" if running else "")]
    return (", ".join(parts) + f" | {duration(elapsed_s)} elapsed | "
            f"ETA {duration(eta_s) if eta_s is not None else '?'}")


@dataclass
class _Job:
    name: str
    estimate_s: float
    started: float


class StudyProgress:
    """The study's jobs as Snakemake reports them, and the line that says how far it is.

    costs: {rule: {(dataset, model, method, seed or None): estimated seconds}} of the jobs the study still has
    to run (tunebench.estimate.study_costs); a job it does not list costs the mean of its rule's, or default_s. Rules in `free`
    (the target rule) cost nothing."""

    def __init__(self, costs: dict | None = None, default_s: float = 15.0, parallel: int = 2,
                 free: frozenset[str] = frozenset(), clock=time.monotonic):
        self.costs = {rule: dict(jobs) for rule, jobs in (costs or {}).items()}
        self.default_s, self.parallel, self.free, self.clock = default_s, parallel, free, clock
        self.start = clock()
        self.planned: dict[str, int] | None = None   # jobs per rule, once Snakemake has built its DAG
        self.started_per_rule: dict[str, int] = {}
        self.running: dict[int, _Job] = {}
        self.finished: list[tuple[float, float]] = []
        self.failed = 0
        self.lock = threading.Lock()

    def _rule_cost(self, rule: str) -> float:
        if rule in self.free:
            return 0.0
        left = self.costs.get(rule)
        return sum(left.values()) / len(left) if left else self.default_s

    def plan(self, per_rule: dict[str, int]) -> None:
        with self.lock:
            self.planned = dict(per_rule)

    def job_started(self, jobid: int, rule: str, wildcards: dict) -> None:
        key = tuple(None if wildcards.get(w) is None else str(wildcards[w])
                    for w in ("dataset", "model", "method", "seed"))
        with self.lock:
            known = self.costs.get(rule, {}).pop(key, None)
            estimate_s = known if known is not None else self._rule_cost(rule)
            name = " ".join([rule, "/".join(str(v) for v in wildcards.values())]).strip()
            self.running[jobid] = _Job(name, estimate_s, self.clock())
            self.started_per_rule[rule] = self.started_per_rule.get(rule, 0) + 1

    def job_finished(self, jobid: int) -> None:
        with self.lock:
            job = self.running.pop(jobid, None)
            if job:
                self.finished.append((job.estimate_s, self.clock() - job.started))

    def job_failed(self, jobid: int) -> None:
        with self.lock:
            if self.running.pop(jobid, None):
                self.failed += 1

    def total(self) -> int:
        rules = set(self.planned or {}) | set(self.started_per_rule)
        return sum(max((self.planned or {}).get(r, 0), self.started_per_rule.get(r, 0)) for r in rules)

    def eta(self) -> float | None:
        """None until Snakemake has said which jobs it will run."""
        if self.planned is None:
            return None
        now = self.clock()
        waiting = [self._rule_cost(rule) for rule, n in self.planned.items()
                   for _ in range(max(0, n - self.started_per_rule.get(rule, 0)))]
        running = [(job.estimate_s, now - job.started) for job in self.running.values()]
        return eta_seconds(waiting, running, self.finished, self.parallel)

    def line(self) -> str:
        with self.lock:
            return status_line(len(self.finished), self.total(), [j.name for j in self.running.values()],
                               self.clock() - self.start, self.eta(), self.failed)

