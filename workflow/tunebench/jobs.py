"""What each Snakemake rule does, as plain functions of (inputs, outputs, params, wildcards, threads).

`run_job(snakemake)` is the single bridge from a rule's `script:` to these functions: it sends the job's
output to the rule's log file, pins threads, and turns an error into one clear line plus a traceback in the log.
The rules that run methods (one per family, see tunebench.families) all go to `run_method`.
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


def run_spec(inp, params, wildcards, threads, run_dir, seed: int):
    from tunebench.runner import RunSpec

    p = dict(params.run)
    return RunSpec(
        dataset=wildcards.dataset, model=wildcards.model, method=wildcards.method, seed=seed,
        dataset_cfg=p["dataset_cfg"], model_cfg=p["model_cfg"], method_cfg=p["method_cfg"],
        table_path=inp.table, run_dir=Path(run_dir), threads=threads,
        tokenized_dir=getattr(inp, "tokenized", None), features_path=getattr(inp, "features", None),
        embeddings_path=getattr(inp, "embeddings", None), lexicon_path=getattr(inp, "lexicon", None),
        model_dir=getattr(inp, "model_dir", None), selection_path=getattr(inp, "selection", None),
        trained_dir=getattr(inp, "trained", None),
        extra={"retriever_cfg": p.get("retriever_cfg"), "api_cache_dir": p.get("api_cache"), "seeds": p.get("seeds")},
    )


def run_method(inp, out, params, wildcards, threads):
    from tunebench.runner import execute

    spec = run_spec(inp, params, wildcards, threads, Path(out.metrics).parent, int(wildcards.seed))
    execute(spec, out.predictions, out.metrics)


def select_learning_rate(inp, out, params, wildcards, threads):
    from tunebench import files
    from tunebench.runner import select

    out_dir = Path(out.selection).with_suffix("")   # the trials' scratch folder, removed when they are done
    spec = run_spec(inp, params, wildcards, threads, out_dir, int(params.run["seed"]))
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


JOBS = {"prepare": prepare, "tokenize": tokenize, "encode_features": encode_features, "import_model": import_model,
        "aggregate": aggregate, "report": report}


def job_function(rule: str):
    """The function of a rule: a method family's rule runs a method, its tune_ rule selects the learning
    rate, the others are named in JOBS. A rule imported from tunebench as a module carries a prefix
    (`use rule * from tunebench as tb_*`): the longest known name it ends with is the rule."""
    from tunebench import families

    tune_rules = {f"tune_{fam.name}" for fam in families.families() if fam.trains}
    for start in [0] + [i + 1 for i, char in enumerate(rule) if char == "_"]:
        name = rule[start:]
        if families.by_rule(name):
            return run_method
        if name in tune_rules:
            return select_learning_rate
        if name in JOBS:
            return JOBS[name]
    raise KeyError(f"rule '{rule}' is not a tunebench rule")


def set_threads(threads: int) -> None:
    """Use exactly the cores the rule was given (Snakemake / SLURM). Must run before numpy or torch is imported:
    their thread pools read these variables once, at import."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def run_job(smk) -> None:
    job = job_function(smk.rule)
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
