# Runs → tables with statistics → the comparison report. Only the settings each step uses are its params, so
# a plot option reruns the report alone.


rule aggregate:
    input:
        metrics=[f"{d}/metrics.json" for d in run_dirs()],
        predictions=[f"{d}/predictions.parquet" for d in run_dirs()],
        tables=[f"results/data/{d}/table.parquet" for d in study_datasets()],
    output:
        runs=report("results/runs.csv", caption="../report/runs.rst", category="Tables"),
        summary=report("results/summary.csv", caption="../report/summary.rst", category="Tables"),
        comparisons=report("results/comparisons.csv", caption="../report/comparisons.rst", category="Tables"),
        strata=report("results/strata.csv", caption="../report/strata.rst", category="Tables"),
    log:
        "logs/aggregate.log",
    conda:
        "../../envs/data.yaml"
    params:
        datasets=study_datasets(),
        clusters=dataset_clusters(),
        stats=lambda wc: report_settings("comparisons", "bootstrap_samples", "confidence"),
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"


rule report:
    input:
        runs="results/runs.csv",
        summary="results/summary.csv",
        comparisons="results/comparisons.csv",
        strata="results/strata.csv",
        anchors=PUBLISHED_ANCHORS,
    output:
        markdown=report("results/report.md", caption="../report/report.rst", category="Report"),
        html=report("results/report.html", caption="../report/report_html.rst", category="Report"),
        # build_report writes its figures to figures/ next to report.md.
        readme_table="results/readme_table.md",
        figures=report(
            directory("results/figures"),
            # <dataset>/all/<figure>.png compares methods; <dataset>/<method>/lr-selection.png is one method's
            patterns=["{dataset}/{method}/{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "method": "{method}", "figure": "{figure}"},
        ),
    log:
        "logs/report.log",
    conda:
        "../../envs/data.yaml"
    params:
        settings=lambda wc: report_settings("primary_metric", "dictionary_words", "study", "full_study_command"),
        config_file=os.path.relpath(workflow.configfiles[-1]) if workflow.configfiles else None,
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"
