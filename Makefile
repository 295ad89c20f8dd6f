# Two set-up commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): setup.py | $(BIN)/python
	$(BIN)/pip install --upgrade -q pip
	$(BIN)/pip install -q -e '.[test,tpu,data]'
	touch $(STAMP)

install: $(STAMP)

# 8 host devices so mesh/sharding tests run on CPU. Two pytest-xdist workers, a test file each
# (module fixtures are built once): most tests compile on one core, so two halve the wall time
# (the 2-core VM: about 28 minutes in one process, 14 in two). Files go out in the order
# tests/conftest.py collects them, the slowest first (--no-loadscope-reorder).
test: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

demo: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python -m wildactor_jax.demo --out demo_out

clean:
	rm -rf $(VENV) demo_out
