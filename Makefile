# Two commands do everything on a fresh clone: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo test test-ops test-fast lint bench clean

install: $(STAMP)

# Reinstalls when pyproject.toml changes; the CPU torch build on this machine's disk satisfies the range.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# the encoder stage's extra without its torchvision requirement, and torchvision (the release built for
	# the installed torch: 2.N pairs with 0.(N+15)) outside site-packages, where transformers cannot import it
	# (training/openclip.py). if/then, not `probe && install || true`: a failed install fails `make install`.
	$(PY) -m pip install -q --no-deps 'open_clip_torch>=3.3,<4' 'timm>=1.0' 'ftfy>=6' wcwidth
	if $(PY) -c "import importlib.util as u, sys; sys.exit(u.find_spec('torchvision') is not None)"; then \
	  tv=$$($(PY) -c "import torch; print('0.%d.*' % (int(torch.__version__.split('.')[1]) + 15))") && \
	  $(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/isolated "torchvision==$$tv"; fi
	touch $(STAMP)

# PREFECT_HOME under artifacts/: the demo's flow runs stay in that SQLite database, so
# `PREFECT_HOME=artifacts/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/prefect server start` shows them in the UI afterwards.
# One OpenMP thread: the demo's models are tiny, and spinning OpenMP threads made a training step up to ~40x
# slower on a busy 2-core machine (BENCHMARKS.md); set OMP_NUM_THREADS yourself to override.
demo: $(STAMP)
	PREFECT_HOME=$(CURDIR)/artifacts/prefect OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/cxrflow demo

# pytest-xdist: one worker process per core (at most 4: each starts its own Prefect test server; the tests are
# single-threaded, OMP_NUM_THREADS=1 in tests/conftest.py). Whole modules per worker (their module fixtures are
# built once), in collection order: tests/conftest.py puts the modules with slow tests first.
# PYTEST_XDIST="-n 0" runs in one process.
PYTEST_XDIST ?= -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

# Everything but the `ops` tests (every config's header command, deployments on real process workers: minutes
# each); `make test-ops` runs those, and .ci/run runs both.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not ops" $(PYTEST_XDIST)

test-ops: $(STAMP)
	$(PY) -m pytest -q -m ops

# The edit-test loop: everything but the end-to-end tests marked slow (make test still runs them all).
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow and not ops" $(PYTEST_XDIST)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf artifacts/* .pytest_cache
