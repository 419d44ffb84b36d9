# Raw corpora → validated, split tables → tokenised Arrow shards → cached pooled features.


rule prepare:
    input:
        lambda wc: [str(p) for p in tunebench.data.loaders.raw_files(config["datasets"][wc.dataset])],
    output:
        table=paths.table(),
        splits=paths.splits(),
        manifest=paths.manifest(),
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../../envs/data.yaml"
    params:
        job="prepare",
        dataset_cfg=lambda wc: dataset_settings(wc.dataset),
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"


rule tokenize:
    input:
        table=paths.table(),
    output:
        shards=directory(paths.tokenized()),
    log:
        "logs/tokenize/{dataset}/{model}/len{max_length}.log",
    conda:
        "../../envs/train.yaml"
    threads: 2
    params:
        job="tokenize",
        model_cfg=lambda wc: config["models"][wc.model],
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"


rule encode_features:
    input:
        shards=paths.tokenized(),
    output:
        features=paths.features(),
    log:
        "logs/encode_features/{dataset}/{model}/{pooling}-len{max_length}.log",
    conda:
        "../../envs/train.yaml"
    threads: 8
    params:
        job="encode_features",
        model_cfg=lambda wc: config["models"][wc.model],
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"
