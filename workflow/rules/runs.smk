# One job per (dataset, model, method, seed). The method families (tunebench.families) share one run
# interface (tunebench.runner) and differ only in what they read and the resources they ask for, so the
# profiles can send e.g. the fine-tuning rules to GPU nodes by rule name. A method reaches exactly one of these
# rules: the one of its strategy's family.

for _family in families.families():

    rule:
        name:
            _family.rule
        input:
            unpack(run_inputs),
        output:
            predictions=paths.run_predictions(),
            metrics=paths.run_metrics(),
        log:
            f"logs/{_family.rule}/{{dataset}}/{{model}}/{{method}}/seed{{seed}}.log",
        wildcard_constraints:
            method=_alternatives(methods_of(_family)),
        conda:
            f"../../envs/{_family.env}.yaml"
        threads: _family.threads
        params:
            job="run_method",
            run=run_params,
            version=tunebench.__version__,
        script:
            "../scripts/tunebench_job.py"


# Methods with a learning_rate_grid: the rate is chosen on dev once per (dataset, model, method) by trials on the
# first select_seeds seeds (the protocol: tunebench.selection), and every seed's run trains at it.
# `trained` holds the chosen full-length trial's model: the first seed's run evaluates it instead of training
# the same model again (empty when trials are shortened).
for _family in families.families():
    if not _family.trains:
        continue

    rule:
        name:
            f"tune_{_family.name}"
        input:
            unpack(selection_inputs),
        output:
            selection=paths.selection(),
            trained=directory(paths.trained()),
        log:
            f"logs/tune_{_family.name}/{{dataset}}/{{model}}/{{method}}.log",
        wildcard_constraints:
            method=_alternatives(methods_of(_family)),
        conda:
            f"../../envs/{_family.env}.yaml"
        threads: _family.threads
        params:
            job="select_learning_rate",
            run=selection_params,
            version=tunebench.__version__,
        script:
            "../scripts/tunebench_job.py"
