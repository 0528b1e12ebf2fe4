"""A real OpenTelemetry Collector (OTLP receiver -> file exporter) on loopback, for the export tests.

The binary is built from its Go modules by scripts/build-otelcol.sh (cached
per version); a build that fails is a test failure, not a skip, so CI
cannot go green without the Collector.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build-otelcol.sh"


class CollectorError(RuntimeError):
    pass


def build() -> Path:
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise CollectorError(f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  file:
    path: {out}
    flush_interval: 100ms
    append: true  # a restarted Collector writes after the lines of the one before
service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [file]
"""


class Collector:
    """``otelcol --config`` as a child process; stop() and start() again keep the port and the output file."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.out = workdir / "collector-out.jsonl"
        self.config = workdir / "collector.yaml"
        self.log = workdir / "collector.log"
        self.config.write_text(CONFIG.format(port=self.port, out=self.out), encoding="utf-8")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        # The file exporter appends (append: true): each run writes after the lines of the last one.
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen([str(self.binary), "--config", str(self.config)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise CollectorError(f"otelcol exited {self._proc.returncode}:\n{self.log.read_text()[-4000:]}")
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise CollectorError(f"otelcol did not listen on {self.endpoint} within {timeout} s")

    def stop(self) -> None:
        """SIGTERM (the Collector flushes its file exporter on shutdown), then wait."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_records(self) -> list[dict[str, Any]]:
        """Every log record the file exporter wrote, each with its resource's attributes under "resource"."""
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            doc = json.loads(line)
            for rl in doc.get("resourceLogs", []):
                resource = attributes(rl.get("resource", {}).get("attributes", []))
                for sl in rl.get("scopeLogs", []):
                    for rec in sl.get("logRecords", []):
                        out.append(rec | {"resource": resource, "scope": sl.get("scope", {})})
        return out


def value(v: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as a Python value (intValue is a string in OTLP/JSON)."""
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "boolValue" in v:
        return v["boolValue"]
    if "arrayValue" in v:
        return [value(x) for x in v["arrayValue"].get("values", [])]
    return None


def attributes(kvs: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: value(kv.get("value", {})) for kv in kvs}
