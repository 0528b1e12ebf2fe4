# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8080
SUM    := $(shell cksum pyproject.toml | cut -d' ' -f1)
# Two stamps: the demo needs the runtime package only; the tests need it with the test extras
# (460 MB of mypy, schemathesis, grpcio-tools...). The test stamp implies the runtime one.
RUNTIME := $(VENV)/.installed-runtime-$(SUM)
STAMP   := $(VENV)/.installed-test-$(SUM)

.PHONY: demo test test-notice lint install tools bench clean

UV     := $(VENV)/bin/uv
UVTRIED := $(VENV)/.uv-tried

# uv (one wheel from PyPI) fetches and installs the dependencies in parallel: a fresh `make demo`
# spent ~25 of its 25-38 s in pip, one package after another, and 6 s more putting pip itself into
# the venv. So the venv is made without pip and the host's pip puts uv into it. Where uv cannot be
# had or fails, the venv gets pip (ensurepip) and pip does the same install: a speed-up, never a
# requirement.
PIP     = { $(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip; $(PY) -m pip install --quiet $(1); }

$(PY):
	$(PYTHON) -m venv --without-pip $(VENV)

$(UVTRIED): | $(PY)
	$(PYTHON) -m pip --python $(PY) install --quiet uv || echo "uv not installed: pip installs the packages one at a time"
	touch $(UVTRIED)

$(RUNTIME): pyproject.toml | $(UVTRIED)
	$(UV) pip install --quiet --python $(PY) -e . || $(call PIP,-e .)
	rm -f $(VENV)/.installed-runtime-*
	touch $(RUNTIME)

$(STAMP): pyproject.toml | $(UVTRIED)
	$(UV) pip install --quiet --python $(PY) -e '.[test]' || $(call PIP,-e '.[test]')
	rm -f $(VENV)/.installed-*
	touch $(STAMP) $(RUNTIME)

install: $(STAMP)

# The whole daemon on the bundled incident: curl localhost:8080/pods/pod-b/drops (make demo PORT=9090)
demo: $(RUNTIME)
	$(VENV)/bin/drop-explainer demo --port $(PORT)

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

# Said first, so that a cold run's long silences are expected. The times are rough (2 cores, empty caches).
test-notice:
	@echo "make test: installs the package with its test extras into $(VENV) (~460 MB; minutes on a cold pip cache),"
	@echo "  compiles kube-apiserver, etcd, kubectl and the hubble CLI from Go modules into ~/.cache/drop-explainer"
	@echo "  (a few minutes each on 2 cores when cold; cached by version, so seconds afterwards),"
	@echo "  installs Prometheus, promtool and Alertmanager from Debian packages (apt),"
	@echo "  then runs ruff, mypy --strict and pytest. With everything cached only the last step takes time."

test: test-notice lint tools
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
