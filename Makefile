# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint install tools bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# The whole daemon on the bundled incident: curl localhost:8080/pods/pod-b/drops
demo: $(STAMP)
	$(VENV)/bin/drop-explainer demo

# Real components the tests start: kube-apiserver, etcd, kubectl, the hubble CLI and an OpenTelemetry
# Collector (built from Go modules, cached by version), Prometheus, promtool and Alertmanager (Debian packages).
tools: $(STAMP)
	bash scripts/build-k8s-binaries.sh
	bash scripts/build-hubble-cli.sh
	bash scripts/build-otelcol.sh
	bash scripts/install-test-tools.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check daemon tests bench scripts
	$(VENV)/bin/mypy

test: lint tools
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/engine.py
	$(PY) bench/explain.py
	$(PY) bench/hubble_stream.py
	$(PY) bench/pipeline.py
	$(PY) bench/store.py
	$(PY) bench/calico.py
	$(PY) bench/api_load.py
	$(PY) bench/export.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
