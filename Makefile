# topaz-lightning: set-up, tests, demos and benchmarks. Every target creates .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the CPU build of torch lies on local disk; installing it first keeps pip from pulling a CUDA build
TORCH_PIN := torch==2.13.0
PYTEST_ARGS ?=
OUT ?= demo_out

.PHONY: install test test-slow demo demo-real lint format bench bench-topaz accuracy clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt $(TORCH_PIN)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

demo: install
	bash scripts/demo.sh $(OUT)

demo-real: install
	bash scripts/demo_real.sh $(OUT)_real

lint: install
	$(BIN)/ruff check topaz_lightning tests scripts
	$(BIN)/ruff format --check topaz_lightning tests scripts
	$(BIN)/lint-imports --config .importlinter

format: install
	$(BIN)/ruff format topaz_lightning tests scripts
	$(BIN)/ruff check --fix topaz_lightning tests scripts

bench: install
	$(BIN)/python scripts/bench.py

# Topaz 0.3.20 side by side (its own venv in .bench/topaz_venv; writes docs/benchmarks/topaz.md).
# Long: one conv31 picking round (the default scoring + Topaz, 16 micrographs, 1 thread) took
# ~180 s CPU on a quiet 2-core EPYC (2026-12-07), the dense reference ~100 s more; the defaults
# make 3 rounds per model (resnet8: ~25 s CPU a micrograph for both tools together) plus trainings.
# Parts and sizes: make bench-topaz BENCH_TOPAZ_ARGS="--only aupr_real pick_conv31 --repeats 1"
bench-topaz: install
	$(BIN)/python scripts/bench_topaz.py $(BENCH_TOPAZ_ARGS)

# leave-one-micrograph-out accuracy study on the real sample data plus the simulated presets
# (every setting of scripts/accuracy_study.py; docs/accuracy.md). Resumable: stop and rerun at
# will. On this 2-core EPYC the 69 timed training runs took 5.1 CPU-core hours (the sum of
# accuracy_out/train/*/*/fold*.seconds); scoring, the untimed first-pass runs and the settings
# not run yet (resnet16_1k, piauto_1k) come on top. It trains, picks, evaluates, then writes the
# tzl-report table and the lever tables. One lever:
# scripts/accuracy_study.py --only <setting>
accuracy: install
	OMP_NUM_THREADS=1 $(BIN)/python scripts/accuracy_study.py --out accuracy_out --simulated

clean:
	rm -rf $(VENV) $(OUT) $(OUT)_real outputs multirun *.egg-info .pytest_cache .ruff_cache
