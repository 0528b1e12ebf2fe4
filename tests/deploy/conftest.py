"""Fixtures for the tests of deploy/: the real tools, and every kustomization rendered once.

The tools come from scripts/install-test-tools.sh (Debian's prometheus,
promtool and alertmanager; kubectl built from its Go module, cached by
version; kubernetes-validate in the venv). It returns at once when all are
present, so every session calls it. Shared helpers live in deploy_support.py
(a plain module: `import conftest` would find tests/conftest.py first).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deploy_support import KUSTOMIZATIONS, REPO, Tools, render


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: tests of deploy/, Dockerfile and monitoring with real tools")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.deploy)


def _which(*names: str) -> Path:
    for name in names:
        found = shutil.which(name)
        if found:
            return Path(found)
    pytest.fail(f"{' or '.join(names)} not found after scripts/install-test-tools.sh")


@pytest.fixture(scope="session")
def tools() -> Tools:
    script = REPO / "scripts" / "install-test-tools.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        pytest.fail(f"scripts/install-test-tools.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    kubectl_dir = Path(done.stdout.strip().splitlines()[-1])
    return Tools(kubectl=kubectl_dir / "kubectl", promtool=_which("promtool"), prometheus=_which("prometheus"),
                 alertmanager=_which("prometheus-alertmanager", "alertmanager"))


@pytest.fixture(scope="session")
def rendered(tools: Tools) -> dict[str, list[dict[str, Any]]]:
    """kustomization path under deploy/ -> its rendered objects."""
    return {k: render(tools, k) for k in KUSTOMIZATIONS}
