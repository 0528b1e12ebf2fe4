"""Every third-party module the package imports comes from a runtime dependency, and nothing more is needed.

``make demo`` and the image install the runtime dependencies only: an import
of a test-only package (jsonschema, say) would work in the test venv and fail
in the product.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "daemon" / "drop_explainer"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime() -> set[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    return {_normal(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps}


def _imported_top_levels() -> dict[str, str]:
    """Top-level module -> one file importing it, for absolute imports outside the package and the stdlib."""
    found: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        if "_pb" in path.parent.name:  # generated protobuf modules import google.protobuf only
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top != "drop_explainer" and top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_every_import_is_a_runtime_dependency() -> None:
    runtime = _runtime()
    providers = metadata.packages_distributions()
    missing = {top: where for top, where in _imported_top_levels().items()
               if not {_normal(d) for d in providers.get(top, [])} & runtime}
    assert not missing, f"imported but not a runtime dependency in pyproject.toml: {missing}"
