# neurosmk: `make demo` runs the pipeline on the bundled demo data; `make test` runs the tests.
# Works on Debian/Ubuntu and macOS with Python 3.11 (set PYTHON=python3.11 if python3 is older).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
CONFIG ?= config/config.yaml

.PHONY: venv demo test test-fast report why status clean-demo lint

$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "neurosmk needs Python >= 3.11; run: make PYTHON=python3.11 ..."'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==24.3.1"
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml --report results/demo/report.html
	@echo ""
	@echo "Outputs: results/demo/  (BIDS-Derivatives; group tables in results/demo/group/)"
	@echo "Report:  results/demo/report.html"

# make test: every test (CI); make test-fast: without the slow tier (real pipeline runs, local
# SLURM, MRtrix3 runs; tests marked `slow` or using a fixture of tests/conftest.py SLOW_FIXTURES)
test: venv
	$(BIN)/python -m pytest -q -rs --durations=25

test-fast: venv
	$(BIN)/python -m pytest -q -rs -m "not slow" --durations=15

# Why would jobs re-run? Each job's own reason (params with old and new values, code, input
# files, newer inputs, missing outputs), then the jobs that only follow. make why CONFIG=my.yaml
why: venv
	$(BIN)/python scripts/why.py --cores $(CORES) --configfile $(CONFIG)

# Subject x stage status of a run: done / failed (first error line + log) / not run, counts per
# stage, and a TSV (OUTPUT_DIR/logs/neurosmk_status.tsv). make status OUTPUT_DIR=/data/derivatives/neurosmk
OUTPUT_DIR ?= results/demo
status: venv
	$(BIN)/python -m neurosmk.status $(OUTPUT_DIR)

clean-demo:
	rm -rf results/demo

# The static gates of tests/test_static_gates.py on their own: ruff, snakefmt, snakemake --lint per
# scenario config (.test/config_*.yaml)
lint: venv
	$(BIN)/ruff check src scripts benchmarks tests
	$(BIN)/snakefmt --check Snakefile rules/
	for c in .test/config_*.yaml; do $(BIN)/snakemake --lint --configfile "$$c" || exit 1; done
