"""Saved flow files, one JSON record a line, as Flow records.

The format is decided per line, so files that mix forms (or were
concatenated) still read:

- our own record (``"record": "drop-explainer.flow/v1"``) -> ``flows.codec``;
- a Hubble response line (``{"flow": {...}, "node_name": ..., "time": ...}``)
  as ``hubble observe -o jsonpb`` / ``-o json`` print it and the Hubble
  exporter writes it (field-masked or not);
- a bare Hubble flow object (``hubble observe`` legacy JSON output).

A gzip file is recognised by its magic bytes, whatever its name. A line
that cannot be used becomes a ``MalformedRecord`` in the output instead of
an exception, so the caller counts it and goes on; exporter lines that are
not flows (``lost_events``...) are reported the same way with a reason
starting ``not-a-flow``. Blank lines are skipped silently.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from drop_explainer.flows import codec, model
from drop_explainer.normalise import checking
from drop_explainer.normalise import hubble as normalise_hubble

_GZIP_MAGIC: Final = b"\x1f\x8b"
_FILE_LIMITS: Final = checking.Limits(max_future_ns=2**62)


@dataclass(frozen=True, slots=True)
class MalformedRecord:
    """A line that gave no Flow: where it is (1-based) and why."""

    line_no: int
    reason: str


def read_flows(path: str | Path) -> Iterator[model.Flow | MalformedRecord]:
    """Yield one Flow or MalformedRecord per non-blank line of path (plain or gzip)."""
    with _open(Path(path)) as lines:
        line_no = 0
        try:
            for line_no, line in enumerate(lines, start=1):
                if line.strip():
                    yield parse_line(line, line_no)
        except (EOFError, gzip.BadGzipFile, OSError) as exc:
            # A truncated or corrupt gzip stream: report where, keep what was read.
            yield MalformedRecord(line_no + 1, f"unreadable compressed data: {exc}")


def parse_line(line: str, line_no: int = 0) -> model.Flow | MalformedRecord:
    """One line in any supported form -> Flow, or MalformedRecord saying why not."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return MalformedRecord(line_no, f"not JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(obj, dict):
        return MalformedRecord(line_no, "not a JSON object")
    try:
        flow = codec.flow_from_json(obj) if "record" in obj else normalise_hubble.flow_from_json(obj, origin="file")
        # A saved file is history: no clamping to the local clock, only the value checks and size caps.
        return checking.check(flow, limits=_FILE_LIMITS).flow
    except (codec.BadFlowRecord, normalise_hubble.MalformedFlow, checking.InvalidFlow) as exc:
        return MalformedRecord(line_no, str(exc))
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        # Whatever else a hostile line trips over is that line's problem only.
        return MalformedRecord(line_no, f"unusable record: {type(exc).__name__}")


def _open(path: Path) -> TextIO:
    with path.open("rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    if compressed:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")
