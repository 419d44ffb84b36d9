# One job per (dataset, model, method, seed). The families share one run interface (tunebench.runner) and
# differ only in what they read and the resources they ask for, so the profiles can send e.g. the
# fine-tuning rules to GPU nodes by rule name. A method reaches exactly one of these rules.

RUN_RULES = {
    # rule name: (method family, conda env, threads)
    "run_baseline": ("baseline", "baselines", 1),
    "finetune_encoder": ("encoder", "train", 8),
    "embed_fewshot": ("embedding", "train", 2),
    "prompt_llm": ("icl", "train", 8),
    "finetune_seq2seq": ("seq2seq", "train", 8),
}

for _rule_name, (_family, _env, _threads) in RUN_RULES.items():

    rule:
        name:
            _rule_name
        input:
            unpack(run_inputs),
        output:
            predictions=f"{RUN_DIR}/predictions.parquet",
            metrics=f"{RUN_DIR}/metrics.json",
        params:
            run=run_params,
            version=tunebench.__version__,
        wildcard_constraints:
            method=_alternatives(methods_of(_family)),
        threads: _threads
        log:
            f"logs/{_rule_name}/{{dataset}}/{{model}}/{{method}}/seed{{seed}}.log",
        conda:
            f"../../envs/{_env}.yaml"
        script:
            "../scripts/tunebench_job.py"
