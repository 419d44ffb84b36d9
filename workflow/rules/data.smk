# Raw corpora → validated, split tables → tokenised Arrow shards → cached pooled features.


rule prepare:
    input:
        lambda wc: [str(p) for p in tunebench.data.loaders.raw_files(config["datasets"][wc.dataset])],
    output:
        table="results/data/{dataset}/table.parquet",
        splits="results/data/{dataset}/splits.csv",
        manifest="results/data/{dataset}/manifest.json",
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../../envs/data.yaml"
    params:
        dataset_cfg=lambda wc: dataset_settings(wc.dataset),
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"


rule tokenize:
    input:
        table="results/data/{dataset}/table.parquet",
    output:
        shards=directory("results/tokenized/{dataset}/{model}/len{max_length}"),
    log:
        "logs/tokenize/{dataset}/{model}/len{max_length}.log",
    conda:
        "../../envs/train.yaml"
    threads: 2
    params:
        model_cfg=lambda wc: config["models"][wc.model],
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"


rule encode_features:
    input:
        shards="results/tokenized/{dataset}/{model}/len{max_length}",
    output:
        features="results/features/{dataset}/{model}/{pooling}-len{max_length}.npz",
    log:
        "logs/encode_features/{dataset}/{model}/{pooling}-len{max_length}.log",
    conda:
        "../../envs/train.yaml"
    threads: 8
    params:
        model_cfg=lambda wc: config["models"][wc.model],
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"
