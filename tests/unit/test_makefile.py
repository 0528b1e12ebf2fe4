"""The Makefile as make reads it (``make -n``: what it would run, nothing run).

`make demo` installs the runtime package only, not the test extras; `make
test` installs the extras and says first what it will build; PORT= reaches
`drop-explainer demo --port`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def dry_run(*argv: str, venv: Path) -> list[str]:
    out = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO), f"VENV={venv}", *argv],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.splitlines()


def test_make_demo_installs_the_runtime_package_without_the_test_extras(tmp_path: Path) -> None:
    lines = dry_run("demo", venv=tmp_path / "venv")
    venv = tmp_path / "venv"
    py = f"{venv}/bin/python"
    installs = [ln for ln in lines if "pip install " in ln and " uv " not in f"{ln} "]
    # uv first (in parallel, fast), pip the fallback: the same package, no extras either way.
    assert installs == [f"{venv}/bin/uv pip install --quiet --python {py} -e . || "
                        f"{{ {py} -m pip --version >/dev/null 2>&1 || {py} -m ensurepip; "
                        f"{py} -m pip install --quiet -e .; }}"], lines
    assert not any("[test]" in ln for ln in lines)
    assert lines[-1] == f"{tmp_path / 'venv'}/bin/drop-explainer demo --port 8080"


def test_port_reaches_the_demo_command(tmp_path: Path) -> None:
    assert dry_run("demo", "PORT=9191", venv=tmp_path / "venv")[-1].endswith("drop-explainer demo --port 9191")


def test_make_test_installs_the_test_extras_and_says_first_what_it_builds(tmp_path: Path) -> None:
    lines = dry_run("test", venv=tmp_path / "venv")
    assert lines[0].startswith('echo "make test: installs the package with its test extras'), lines[:3]
    notice = " ".join(ln for ln in lines if ln.startswith("echo"))
    for word in ("kube-apiserver", "etcd", "kubectl", "hubble", "Prometheus", "when cold", "cached"):
        assert word in notice, word
    assert any("pip install --quiet -e '.[test]'" in ln for ln in lines), lines


def test_after_make_test_the_demo_installs_nothing_more(tmp_path: Path) -> None:
    """The test stamp implies the runtime one: a test run followed by `make demo` reinstalls nothing."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    stamps = [ln for ln in dry_run("install", venv=venv) if ln.startswith("touch ")]
    assert len(stamps) == 2, stamps  # uv tried once, then the installed package
    for line in stamps:
        for stamp in line.split()[1:]:
            Path(stamp).touch()
    assert dry_run("demo", venv=venv) == [f"{venv}/bin/drop-explainer demo --port 8080"]
