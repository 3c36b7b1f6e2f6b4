# hybridhydro: the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CASE ?= cance
# make demo OVERWRITE=1 replaces an earlier runs/$(CASE)/; RESUME=1 continues an interrupted one
OVERWRITE ?=
RESUME ?=
NBVAL_DIR := build/nbval/ci
NBVAL_KA_DIR := build/nbval/ci-known-answer
# the stages nbval executes are kept there for the documentation site (tools/build_docs.py)
DOCS_RUN_DIR := build/docs-run/ci
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0
# make test compiles into a cache of its own, emptied when test-fast starts: no test reads back a
# kernel another version of the code, a study or a demo wrote into ~/.cache/hybridhydro/jax
# (one such read crashed an xdist worker inside XLA's deserializer on a shared machine).
TEST_JAX_CACHE := build/test-jax-cache

.PHONY: demo test test-fast test-notebooks test-slow bench mutants venv clean docs docs-deps

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "hybridhydro needs python3 >= 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,smash]"
	@touch $@

## make demo: install, then run the whole notebook pipeline on the Cance basin into runs/cance/
demo: venv
	$(PY) -m hybridhydro run params/$(CASE).yaml $(if $(OVERWRITE),--overwrite) $(if $(RESUME),--resume)

## make test: unit and oracle tests, then every notebook on the tiny synthetic case under nbval
test: test-fast test-notebooks

# The test files are spread over the cores (pytest-xdist; a file stays on one worker, so its
# module fixtures are built once); JOBS=1 runs them in one process. A worker that crashes ends
# the run naming its test (--max-worker-restart 0): under --dist loadfile a replaced worker can
# wait forever (pytest-xdist issues 784 and 1378), and a hang would eat CI's whole budget.
# --durations 20 lists the slowest tests, to keep test-fast near its 15-minute budget on 2 cores.
JOBS ?= auto
test-fast: venv
	rm -rf $(TEST_JAX_CACHE)
	HYBRIDHYDRO_JAX_CACHE=$(abspath $(TEST_JAX_CACHE)) $(PY) -m pytest -m "not slow and not outputs and not site" -q -n $(JOBS) --dist loadfile --max-worker-restart 0 --durations 20

# A fresh folder each time: nothing of an earlier run (a checkpoint, a model) is read back.
# The six stages and the referees' study (08) on the tiny case; the known-answer study (07) on
# its own tiny basin. The stages nbval executes are kept for the documentation site, which the
# last step builds and opens in headless Chromium (skipped, saying why, without Chromium or the
# docs extra: `apt-get install chromium`, `make docs-deps`).
test-notebooks: export HYBRIDHYDRO_JAX_CACHE = $(abspath $(TEST_JAX_CACHE))
test-notebooks: venv
	rm -rf $(NBVAL_DIR) $(NBVAL_KA_DIR) $(DOCS_RUN_DIR)
	$(PY) -m hybridhydro prepare params/ci.yaml --out $(NBVAL_DIR) --stages 01,02,03,04,05,06,08 --overwrite
	$(PY) -m pytest --nbval-lax --nbval-current-env -q -p hybridhydro.pipeline.nbval_keep --save-executed $(DOCS_RUN_DIR) $(NBVAL_DIR)
	$(PY) -m hybridhydro prepare params/ci-known-answer.yaml --out $(NBVAL_KA_DIR) --overwrite
	$(PY) -m pytest --nbval-lax --nbval-current-env -q $(NBVAL_KA_DIR)
	HYBRIDHYDRO_RUN_DIR=$(NBVAL_DIR) $(PY) -m pytest -m outputs -q -n 0 tests/test_outputs.py
	$(PY) -m pytest -m site -q -n 0 tests/test_docs_site.py

## make test-slow: the long cases (France-scale mesh) and oracle cases the fast suite already covers
test-slow: venv
	$(PY) -m pytest -m slow -q

## make bench: speed against hydro-smash on this machine, written to benchmarks/results.md
bench: venv
	$(PY) benchmarks/run_all.py

## make mutants: hand-made bugs, each run against the tests that should catch it (~15 min, not in make test; docs/mutation.md)
mutants: venv
	$(PY) tools/mutants.py

## make docs: the site (README, the tutorials 00-06 executed on params/ci.yaml, docs/*.md, the API
## reference from the docstrings) into build/site/ (open build/site/index.html); installs .[docs]
docs: docs-deps
	$(PY) tools/build_docs.py

# The docs extra only (mkdocs, playwright, ...): make test's site test uses it where it is there.
docs-deps: $(VENV)/.docs-installed

$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e ".[docs]"
	@touch $@

clean:
	rm -rf build .pytest_cache .hypothesis
