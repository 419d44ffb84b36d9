# Runs → tables with statistics → the comparison report. Only the settings each step uses are its params, so
# a plot option reruns the report alone.


rule aggregate:
    input:
        metrics=run_files(paths.run_metrics),
        predictions=run_files(paths.run_predictions),
        tables=[paths.table(d) for d in study_datasets()],
    output:
        runs=report(paths.study_file("runs.csv"), caption="../report/runs.rst", category="Tables"),
        summary=report(paths.study_file("summary.csv"), caption="../report/summary.rst", category="Tables"),
        comparisons=report(paths.study_file("comparisons.csv"), caption="../report/comparisons.rst", category="Tables"),
        strata=report(paths.study_file("strata.csv"), caption="../report/strata.rst", category="Tables"),
    log:
        "logs/aggregate.log",
    conda:
        "../../envs/data.yaml"
    params:
        job="aggregate",
        datasets=study_datasets(),
        clusters=dataset_clusters(),
        stats=lambda wc: report_settings("comparisons", "bootstrap_samples", "confidence"),
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"


rule report:
    input:
        runs=paths.study_file("runs.csv"),
        summary=paths.study_file("summary.csv"),
        comparisons=paths.study_file("comparisons.csv"),
        strata=paths.study_file("strata.csv"),
        anchors=PUBLISHED_ANCHORS,
    output:
        markdown=report(paths.study_file("report.md"), caption="../report/report.rst", category="Report"),
        html=report(paths.study_file("report.html"), caption="../report/report_html.rst", category="Report"),
        # build_report writes its figures to figures/ next to report.md.
        readme_table=paths.study_file("readme_table.md"),
        figures=report(
            directory(paths.study_file("figures")),
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
        job="report",
        settings=lambda wc: report_settings("primary_metric", "dictionary_words", "study", "full_study_command"),
        config_file=os.path.relpath(workflow.configfiles[-1]) if workflow.configfiles else None,
        version=tunebench.__version__,
    script:
        "../scripts/tunebench_job.py"
