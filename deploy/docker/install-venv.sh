#!/bin/sh
# Build the runtime virtual environment: the package and its
# [project.dependencies] only (no [test] extras), compiled to bytecode so a
# read-only root filesystem costs nothing at start.
#
#   install-venv.sh VENV SRC
#
# The Dockerfile runs this in its build stage; tests/deploy/test_dockerfile.py
# runs the same script into a temporary directory (there is no Docker engine
# on the test machines) and starts `drop-explainer --help` from the result.
set -eu
venv="$1"
src="$2"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --quiet "$src"
# pip and setuptools are not needed at run time: fewer files, fewer CVEs.
"$venv/bin/python" -m pip uninstall --yes --quiet pip setuptools
"$venv/bin/drop-explainer" --help >/dev/null
