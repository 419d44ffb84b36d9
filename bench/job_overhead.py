"""Figure (n): the fixed cost per job of a finished study, per rule (#30 item 2: aim ≤ 3 s).

Every finished job of the study's Snakemake logs (<study>/.snakemake/log/*.snakemake.log, oldest first; a job
run again in a later log counts once, as its last run): it starts at the `[timestamp]` line above its
`rule X:` / `localrule X:` and ends at the one above `Finished jobid: N`. Those timestamps have 1-s resolution,
so every duration is ±1 s. A job whose outputs are run records (results/runs/<dataset>/<model>/<method>/
seed<N>/metrics.json, the run its wildcards name) has an overhead: its duration minus the in-process time the
runs recorded (cost.wall_time_s) — the interpreter's start, imports, Snakemake's script preamble, what the run
does before its clock starts, and Snakemake noticing the job ended. A record started outside the job's span is
another invocation's: no overhead. The other jobs (tune_* selections, prepare, tokenize, aggregate, ...) are
reported by their durations alone.
"""

from __future__ import annotations

import json
import re
import statistics
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
FIELD = re.compile(r"^\s+(jobid|wildcards|output): (.*)$")
FINISHED = re.compile(r"^Finished job(?:id:)? (\d+)")
PLANNED = re.compile(r"^total\s+(\d+)\s*$")
COMMAND = re.compile(r"^\s+Command: (.*)$")
SLACK = timedelta(seconds=2)   # the log's 1-s timestamps against the record's microsecond ones


def parse_log(path: Path) -> dict:
    """One Snakemake log: its command, planned job count and finished jobs (rule, wildcards, output, start, end)."""
    log = {"log": str(path), "command": None, "planned": None, "jobs": []}
    started, stamp, current = {}, None, None
    for line in path.read_text(errors="replace").splitlines():
        if current is not None and line.startswith(" "):   # the job's indented fields
            if m := FIELD.match(line):
                current[m.group(1)] = m.group(2)
                if m.group(1) == "jobid":
                    started[m.group(2)] = current
            continue
        current = None
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").astimezone()   # local time
        elif m := RULE.match(line):
            current = {"rule": m.group(1), "wildcards": "", "output": "", "start": stamp}
        elif (m := FINISHED.match(line)) and m.group(1) in started:
            job = started.pop(m.group(1))
            log["jobs"].append({**job, "end": stamp, "duration_s": (stamp - job["start"]).total_seconds()})
        elif log["planned"] is None and (m := PLANNED.match(line)):
            log["planned"] = int(m.group(1))
        elif log["command"] is None and (m := COMMAND.match(line)):
            log["command"] = m.group(1)
    return log


def run_records(study: Path, job: dict) -> list[Path]:
    return [study / out for out in job["output"].split(", ") if out.startswith("results/runs/")
            and out.endswith("/metrics.json")]


def with_run_time(study: Path, job: dict) -> dict:
    """The job with `run_s` (its records' summed cost.wall_time_s) and `overhead_s`; both None without records,
    `stale` when a record is missing or another invocation's."""
    paths = run_records(study, job)
    out = {key: job[key] for key in ("rule", "wildcards", "duration_s")} | {"run_s": None, "overhead_s": None}
    if not paths:
        return out
    run_s = 0.0
    for path in paths:
        record = json.loads(path.read_text()) if path.exists() else {}
        began = record.get("provenance", {}).get("started")
        if not began or not job["start"] - SLACK <= datetime.fromisoformat(began) <= job["end"] + SLACK:
            return out | {"stale": str(path)}
        run_s += record["cost"]["wall_time_s"]
        out["commit"] = record["provenance"].get("git_commit")
    return out | {"run_s": run_s, "overhead_s": job["duration_s"] - run_s}


def study_jobs(study: Path) -> dict:
    logs = [parse_log(path) for path in sorted((study / ".snakemake" / "log").glob("*.snakemake.log"))]
    last = {(job["rule"], job["output"]): job for log in logs for job in log["jobs"]}   # a rerun counts once
    jobs = [with_run_time(study, job) for job in last.values()]
    return {"study": str(study), "jobs": jobs,
            "logs": [{key: log[key] for key in ("log", "command", "planned")} | {"finished": len(log["jobs"])}
                     for log in logs],
            "commits": sorted({job["commit"] for job in jobs if job.get("commit")})}


def spread(seconds: list[float]) -> dict:
    return {"jobs": len(seconds), "median_s": statistics.median(seconds), "p90_s": float(np.percentile(seconds, 90))}


def summary(jobs: list[dict]) -> dict:
    """Per rule: the overhead's spread over its jobs with a run record, else the durations' spread."""
    rules = {}
    for rule in sorted({job["rule"] for job in jobs}):
        mine = [job for job in jobs if job["rule"] == rule]
        overheads = [job["overhead_s"] for job in mine if job["overhead_s"] is not None]
        rules[rule] = ({"overhead": spread(overheads)} if overheads
                       else {"duration": spread([job["duration_s"] for job in mine])})
        rules[rule]["stale"] = sum("stale" in job for job in mine)
    overheads = [job["overhead_s"] for job in jobs if job["overhead_s"] is not None]
    return {"overall": spread(overheads) if overheads else None, "rules": rules}


def flat_values(s: dict, suffix: str) -> dict:
    overall = s["overall"] or {}
    values = {f"job_overhead_{key}{suffix}": overall.get(stat)
              for key, stat in (("median_s", "median_s"), ("p90_s", "p90_s"), ("jobs", "jobs"))}
    for rule, entry in s["rules"].items():
        kind = "overhead" if "overhead" in entry else "duration"
        values |= {f"job_{kind}_{stat}_{rule}{suffix}": entry[kind][stat] for stat in ("median_s", "p90_s", "jobs")}
    return values


def describe(study: dict) -> str:
    logs = study["logs"]
    commands = "; ".join(dict.fromkeys(f"`{log['command']}`" for log in logs if log["command"]))
    per_log = ", ".join(f"{log['finished']} of {log['planned'] or '?'}" for log in logs if log["finished"])
    return (f"{study['study']} (commit {', '.join(c[:7] for c in study['commits']) or 'unknown'}; {commands}; "
            f"jobs finished of those planned, per log: {per_log or 'none'})")


def side_by_side(sides: dict) -> list[str]:
    """A markdown table: per rule, each study's jobs, median and p90 (overhead where a run record exists)."""
    rules = sorted({rule for s in sides.values() for rule in s["rules"]})
    head = "| rule | what | " + " | ".join(f"{name}: jobs / median / p90 (s)" for name in sides) + " |"
    rows = [head, "|---|---|" + "---|" * len(sides)]
    for rule in ["overall"] + rules:
        cells, what = [], "overhead"
        for s in sides.values():
            entry = s["overall"] if rule == "overall" else s["rules"].get(rule)
            if entry and rule != "overall":
                what = "overhead" if "overhead" in entry else "duration"
                entry = entry[what]
            cells.append(f"{entry['jobs']} / {entry['median_s']:.1f} / {entry['p90_s']:.1f}" if entry else "—")
        rows.append(f"| {rule} | {what} | " + " | ".join(cells) + " |")
    return rows


def measure(ctx, study_dir: Path | None, before_dir: Path | None = None) -> dict:
    if study_dir is None:
        return {"workload": "not measured: give --study-dir (a finished study; --before-study-dir for before and "
                            "after side by side)", "values": {"job_overhead_median_s": None}, "raw": {}}
    sides = {"before": study_jobs(before_dir)} if before_dir else {}
    sides["after" if before_dir else "study"] = study_jobs(study_dir)
    summaries = {name: summary(side["jobs"]) for name, side in sides.items()}
    values = {}
    for name, s in summaries.items():
        values |= flat_values(s, "_before" if name == "before" else "")
    workload = ("fixed cost per job: each finished job's Snakemake duration (its log's timestamps: 1-s resolution, "
                "so ±1 s a job) minus the in-process time its run recorded (metrics.json cost.wall_time_s); jobs "
                "without a run record (selection, prepare, tokenize, aggregate, ...) by duration alone. "
                + "; ".join(f"{name}: {describe(side)}" for name, side in sides.items()))
    return {"workload": workload, "values": values, "table": side_by_side(summaries),
            "raw": {name: {**side, "summary": summaries[name]} for name, side in sides.items()}}
