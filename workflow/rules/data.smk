# Raw corpora → validated, split tables → tokenised Arrow shards → cached pooled features.


rule prepare:
    input:
        lambda wc: [str(p) for p in tunebench.data.loaders.raw_files(config["datasets"][wc.dataset])],
    output:
        table="results/data/{dataset}/table.parquet",
        splits="results/data/{dataset}/splits.csv",
        manifest="results/data/{dataset}/manifest.json",
    params:
        dataset_cfg=lambda wc: config["datasets"][wc.dataset],
        version=tunebench.__version__,
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/tunebench_job.py"


rule tokenize:
    input:
        table="results/data/{dataset}/table.parquet",
    output:
        shards=directory("results/tokenized/{dataset}/{model}/len{max_length}"),
    params:
        model_cfg=lambda wc: config["models"][wc.model],
        version=tunebench.__version__,
    threads: 2
    log:
        "logs/tokenize/{dataset}/{model}/len{max_length}.log",
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/tunebench_job.py"


rule encode_features:
    input:
        shards="results/tokenized/{dataset}/{model}/len{max_length}",
    output:
        features="results/features/{dataset}/{model}/{pooling}-len{max_length}.npz",
    params:
        model_cfg=lambda wc: config["models"][wc.model],
        version=tunebench.__version__,
    threads: 8
    log:
        "logs/encode_features/{dataset}/{model}/{pooling}-len{max_length}.log",
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/tunebench_job.py"
