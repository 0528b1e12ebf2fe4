"""The Dockerfile, without a Docker engine: its instructions checked, its build stage run for real.

The build stage is replayed into a temporary "root": the build context is
filtered through .dockerignore, COPY copies into the root, and each RUN line
runs with its absolute paths moved under the root. The install itself is
deploy/docker/install-venv.sh, so this runs exactly what the image runs
(with this machine's Python 3.11 instead of the image's). Needs PyPI.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deploy_support import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
TEST_ONLY = ("pytest", "hypothesis", "mypy", "ruff", "grpcio_tools", "jsonschema", "kubernetes_validate")


@dataclass
class Stage:
    base: str
    name: str = ""
    steps: list[tuple[str, str]] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each a list of (INSTRUCTION, arguments)."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for word, rest in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if word == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip()))
        elif not stages and word == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        elif stages:
            stages[-1].steps.append((word, rest))
    return args, stages


def _expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns we use: last match wins, '!' re-includes, a dir covers its files."""
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        candidates = [path, *(str(p) for p in Path(path).parents if str(p) != ".")]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(Path(c).name, pattern[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, pattern) for c in candidates)
        if hit:
            ignored = not negate
    return ignored


def _patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_base_image_is_a_pinned_slim_python_3_11() -> None:
    """Both stages use one base, a full python:3.11.N-slim-bookworm tag, never latest."""
    args, stages = parse()
    bases = {_expand(s.base, args) for s in stages}
    assert len(bases) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", bases.pop())
    assert [s.name for s in stages] == ["build", ""]


def test_runtime_stage_is_non_root_with_the_console_script() -> None:
    """uid 65532, ENTRYPOINT drop-explainer, default command run, OCI labels, only the venv copied in."""
    _, stages = parse()
    final = dict(stages[-1].steps)
    assert final["USER"] == "65532:65532"
    assert json.loads(final["ENTRYPOINT"]) == ["/opt/drop-explainer/bin/drop-explainer"]
    assert json.loads(final["CMD"]) == ["run"]
    assert final["ARG"] == f"VERSION={VERSION}"
    labels = final["LABEL"]
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.source="https://github.com/' in labels
    copies = [rest for word, rest in stages[-1].steps if word == "COPY"]
    assert copies == ["--from=build /opt/drop-explainer /opt/drop-explainer"]


def test_install_script_installs_runtime_dependencies_only() -> None:
    """pip install --no-cache-dir of the project itself, no extras."""
    script = (REPO / "deploy" / "docker" / "install-venv.sh").read_text()
    assert '-m pip install --no-cache-dir' in script
    assert ".[" not in script


def test_dockerignore_admits_exactly_what_copy_needs() -> None:
    """Every COPY source is in the context; local state (venv, git, tests, caches) is not."""
    _, stages = parse()
    patterns = _patterns()
    assert patterns[0] == "*", "an allowlist: nothing enters the context unless named"
    for stage in stages:
        for word, rest in stage.steps:
            if word == "COPY" and not rest.startswith("--from"):
                for src in shlex.split(rest)[:-1]:
                    assert (REPO / src).exists(), src
                    assert not _ignored(src, patterns), src
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "daemon/drop_explainer/__pycache__/x.pyc",
                 "bench/engine.py"):
        assert _ignored(path, patterns), path
    assert not _ignored("daemon/drop_explainer/cli.py", patterns)


def _context(tmp: Path, patterns: list[str]) -> Path:
    """The build context as Docker would send it."""
    ctx = tmp / "context"
    for dirpath, dirnames, filenames in os.walk(REPO):
        rel_dir = Path(dirpath).relative_to(REPO)
        dirnames[:] = [d for d in dirnames if d not in (".git", ".venv", "node_modules")]
        for name in filenames:
            rel = str(rel_dir / name) if str(rel_dir) != "." else name
            if not _ignored(rel, patterns):
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(dirpath) / name, ctx / rel)
    return ctx


@pytest.mark.timeout(600)
def test_build_stage_makes_a_venv_that_runs(tmp_path: Path) -> None:
    """Replaying the build stage gives a venv whose drop-explainer starts, without test-only packages."""
    _, stages = parse()
    root = tmp_path / "root"
    ctx = _context(tmp_path, _patterns())
    workdir = Path("/")
    for word, rest in stages[0].steps:
        if word == "WORKDIR":
            workdir = workdir / rest
            (root / workdir.relative_to("/")).mkdir(parents=True, exist_ok=True)
        elif word == "COPY":
            *sources, dest = shlex.split(rest)
            target = root / (workdir / dest).relative_to("/")
            for src in sources:
                into = target / Path(src).name if dest.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                if (ctx / src).is_dir():
                    shutil.copytree(ctx / src, into, dirs_exist_ok=True)
                else:
                    shutil.copy2(ctx / src, into)
        elif word == "RUN":
            command = re.sub(r"(?<![\w.])/(?=[\w])", f"{root}/", rest)
            done = subprocess.run(["sh", "-c", command], cwd=root / workdir.relative_to("/"),
                                  capture_output=True, text=True, timeout=540, check=False)
            assert done.returncode == 0, f"RUN {rest}\n{done.stdout}\n{done.stderr}"
        else:
            pytest.fail(f"build stage: {word} is not replayed by this test; teach it")
    _, final = parse()[1]
    entrypoint = json.loads(dict(final.steps)["ENTRYPOINT"])[0]
    program = root / entrypoint.lstrip("/")
    for argv in (["--help"], ["run", "--help"], ["demo", "--help"]):
        done = subprocess.run([str(program), *argv], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"drop-explainer {' '.join(argv)}:\n{done.stderr}"
    site = next((program.parent.parent / "lib").glob("python3.*/site-packages"))
    assert site.parent.name == "python3.11"
    installed = {p.name.split("-")[0].lower() for p in site.iterdir()}
    assert not installed & set(TEST_ONLY), installed & set(TEST_ONLY)
    assert "drop_explainer" in installed
    assert not (program.parent / "pip").exists(), "pip is removed from the runtime venv"
