"""What each Snakemake rule does, as plain functions of (inputs, outputs, params, wildcards, threads).

`run_job(snakemake)` is the single bridge from a rule's `script:` to these functions: it runs the one the rule
names in its params (`job="..."`), sends the job's output to the rule's log file, pins threads, and turns an
error into one clear line plus a traceback in the log. The rules that run methods (one per family, see
tunebench.families) all name `run_method`, their tune_<family> rules `select_learning_rate`. A run's inputs reach
it as the one mapping the rule declares (common.smk's run_inputs → RunSpec.from_config).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path


def prepare(inp, out, params, wildcards, threads):
    from tunebench.data.prepare import prepare_dataset

    prepare_dataset(params.dataset_cfg, wildcards.dataset, out.table, out.splits, out.manifest)


def tokenize(inp, out, params, wildcards, threads):
    from tunebench.modeling.tokenize import tokenize_table

    tokenize_table(inp.table, params.model_cfg, out.shards, threads=threads)


def encode_features(inp, out, params, wildcards, threads):
    from tunebench.modeling.features import encode_features as encode

    encode(inp.shards, params.model_cfg, wildcards.pooling, out.features, threads=threads)


def import_model(inp, out, params, wildcards, threads):
    from tunebench.modeling.loading import convert_gguf

    info = convert_gguf(params.model_cfg, out.model_dir, where=f"config key 'models.{wildcards.model}")
    print(f"converted {info['gguf_file']} ({info['parameters']:,} parameters, sha256 {info['sha256']}) "
          f"in {info['seconds']:.1f} s")


def run_spec(inp, params, threads, run_dir, seed: int):
    """The RunSpec of a run or selection job: the rule's run params (its slice of config) and its inputs, which
    the rule names as RunSpec.from_config reads them (tunebench.spec.INPUT_FIELDS)."""
    from tunebench.spec import RunSpec

    p = dict(params.run)
    config = {"datasets": {p["dataset"]: p["dataset_cfg"]}, "models": {p["model"]: p["model_cfg"]},
              "methods": {p["method"]: p["method_cfg"]}}
    return RunSpec.from_config(
        config, p["dataset"], p["model"], p["method"], seed, run_dir=run_dir, inputs=dict(inp.items()),
        threads=threads,
        extra={"retriever_cfg": p.get("retriever_cfg"), "api_cache_dir": p.get("api_cache"), "seeds": p.get("seeds")})


def run_method(inp, out, params, wildcards, threads):
    from tunebench.runner import execute

    spec = run_spec(inp, params, threads, Path(out.metrics).parent, int(params.run["seed"]))
    execute(spec, out.predictions, out.metrics)


def select_learning_rate(inp, out, params, wildcards, threads):
    from tunebench import files
    from tunebench.runner import select

    out_dir = Path(out.selection).with_suffix("")   # the trials' scratch folder, removed when they are done
    spec = run_spec(inp, params, threads, out_dir, int(params.run["seed"]))
    files.write_json(out.selection, select(spec, Path(out.trained)))


def aggregate(inp, out, params, wildcards, threads):
    from tunebench.evaluation.aggregate import aggregate_runs

    aggregate_runs(list(inp.metrics), list(inp.predictions), out.runs, out.summary, out.comparisons,
                   out.strata, tables=dict(zip(params.datasets, inp.tables)), clusters=params.clusters,
                   **params.stats)


def report(inp, out, params, wildcards, threads):
    from tunebench.evaluation.report import build_report

    build_report(inp.runs, inp.summary, inp.comparisons, inp.anchors, out.markdown, out.html,
                 strata_csv=inp.strata, readme_md=out.readme_table, config_file=params.config_file,
                 **params.settings)


JOBS = {job.__name__: job for job in (prepare, tokenize, encode_features, import_model, run_method,
                                      select_learning_rate, aggregate, report)}


def job_function(params):
    """The function a rule names in its params (`job="run_method"`): a reader goes from rule to code in one hop,
    whatever the rule is called (a workflow that uses tunebench as a module may prefix the rule names)."""
    name = getattr(params, "job", None)
    if name not in JOBS:
        raise KeyError(f"a tunebench rule names its job in params (job=...; known: {', '.join(JOBS)}), not {name!r}")
    return JOBS[name]


def set_threads(threads: int) -> None:
    """Use exactly the cores the rule was given (Snakemake / SLURM). Must run before numpy or torch is imported:
    their thread pools read these variables once, at import."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def run_job(smk) -> None:
    job = job_function(smk.params)
    terminal = os.fdopen(os.dup(2), "w")
    if smk.log:
        log = open(smk.log[0], "w", buffering=1)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
    set_threads(smk.threads)
    try:
        job(smk.input, smk.output, smk.params, smk.wildcards, smk.threads)
    except Exception as e:  # noqa: BLE001 — every failure gets one clear line where the user looks
        traceback.print_exc()
        message = f"tunebench {smk.rule}: {type(e).__name__}: {e}"
        print(message, file=sys.stderr)
        print(message, file=terminal)
        terminal.flush()
        sys.exit(1)
