"""`snakemake --logger tunebench`: the Rich progress display (snakemake-logger-plugin-rich) with one more live
line, the study's progress and ETA from tunebench.estimate (tunebench.progress.StudyProgress):

    12/40 jobs done, 2 running: finetune_encoder fpb/minilm/lora/0, prompt_llm ... | 3m12s elapsed | ETA 8m05s

Not on a terminal (CI, output piped to a file) the line is printed once per finished or failed job instead.
Snakemake finds the plugin by its package name (snakemake_logger_plugin_<name>, on sys.path through the
tunebench install). The study's jobs are priced from the config file given on the command line (`--configfile`,
else the Snakefile's default config/config.yaml) with its `--config` overrides, against the reference run
(docs/results, or --logger-tunebench-reference).
"""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

# Snakemake imports every logger plugin it finds at each start, used or not: this module must import without
# Rich's plugin, and imports tunebench only when it is used.
try:
    from rich.console import Group
    from rich.text import Text
    from snakemake_logger_plugin_rich import LogHandler as RichLogHandler
except ImportError:
    RichLogHandler = None

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = "config/config.yaml"   # the Snakefile's, when no --configfile is given
TARGET_RULES = frozenset({"all"})


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    reference: Optional[Path] = field(default=None, metadata={
        "help": "folder with the reference runs.csv and calibration.json that price each job "
                "(default: the repository's docs/results)"})


def option_values(argv: list[str], *names: str) -> list[str] | None:
    """The values given to the last of the options `names` in `argv` (`--opt a b`, `--opt=a`), or None."""
    found = None
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in names:
            found = [value] if eq else []
            for nxt in argv[i + 1:] if not eq else []:
                if nxt.startswith("-"):
                    break
                found.append(nxt)
    return found


def command_line_study(argv: list[str]) -> tuple[Path, dict, int]:
    """(config file, --config overrides, cores) of the Snakemake command line."""
    configs = option_values(argv, "--configfile", "--configfiles")
    configfile = Path(configs[-1]).absolute() if configs else Path(DEFAULT_CONFIG)
    overrides = {}
    for item in option_values(argv, "--config", "-C") or []:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    cores = (option_values(argv, "--cores", "-c", "--jobs", "-j") or ["all"])[0]   # the profile: all
    return configfile, overrides, int(cores) if cores.isdigit() else (os.cpu_count() or 1)


class StatusLine:
    """The progress line, rendered afresh at each refresh of the live display (so elapsed time runs)."""

    def __init__(self, progress):
        self.progress = progress

    def __rich__(self):
        return Text(self.progress.line(), style="bold", no_wrap=True, overflow="ellipsis")


class LogHandler(RichLogHandler or LogHandlerBase):
    def __new__(cls, *args, **kwargs):
        if RichLogHandler is None:
            raise ImportError("--logger tunebench needs snakemake-logger-plugin-rich (a tunebench dependency: "
                              "`make install`, or pip install snakemake-logger-plugin-rich)")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        from tunebench import estimate
        from tunebench.progress import StudyProgress

        reference = getattr(self.settings, "reference", None)   # the Rich handler replaces self.settings
        super().__post_init__()
        self.study, self.overrides, self.cores = command_line_study(sys.argv[1:])
        self.reference = Path(reference) if reference else REPOSITORY / "docs" / "results"
        self.progress = StudyProgress(parallel=estimate.parallel_jobs(self.cores), free=TARGET_RULES)
        self.closed = False
        self.live_display.update(Group(self.live_display.get_renderable(), StatusLine(self.progress)))

    def emit(self, record) -> None:
        super().emit(record)
        if self.common_settings.dryrun:
            return
        try:
            self.track(record)
        except Exception:  # noqa: BLE001 — a progress line never stops the workflow
            self.handleError(record)

    def track(self, record) -> None:
        event = getattr(record, "event", None)
        if event == LogEvent.RUN_INFO:
            self.progress.costs, self.progress.default_s = self.job_costs()
            self.progress.plan({rule: n for rule, n in record.stats.items() if rule != "total"})
        elif event == LogEvent.JOB_INFO:
            self.progress.job_started(record.jobid, record.rule_name, dict(record.wildcards or {}))
        elif event in (LogEvent.JOB_FINISHED, LogEvent.JOB_ERROR):
            if event == LogEvent.JOB_FINISHED:
                self.progress.job_finished(record.job_id)
            else:
                self.progress.job_failed(record.jobid)
            if not self.console.is_terminal:
                self.console.print(self.progress.line(), markup=False, highlight=False, soft_wrap=True)

    def job_costs(self) -> tuple[dict, float]:
        """Each planned job's estimated seconds (tunebench.estimate.study_costs); without a reference or a
        readable config, every job costs the same and only the finished jobs' times inform the ETA."""
        from tunebench.estimate import study_costs

        try:
            return study_costs(self.study, self.reference, Path("results"), self.overrides,
                               threads=max(1, self.cores // 2))
        except Exception as e:  # noqa: BLE001
            self.console.print(f"progress: no per-job estimates ({type(e).__name__}: {e}); the ETA follows the "
                               f"finished jobs", markup=False, highlight=False, soft_wrap=True)
            return {}, self.progress.default_s

    def close(self) -> None:
        super().close()
        if (not self.closed and self.console.is_terminal and self.progress.planned is not None
                and not self.common_settings.dryrun):   # off a terminal, the last job already printed it
            self.closed = True
            self.console.print(self.progress.line(), markup=False, highlight=False, soft_wrap=True)
