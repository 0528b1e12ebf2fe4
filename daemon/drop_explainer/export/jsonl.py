"""JSON lines file export, for Fluent Bit and Vector: one record per line, in the OTLP record's shape.

Rotated by size and count like Hubble's flow exporter (``--export-file-max-size-mb``,
``--export-file-max-backups``, which it gets from lumberjack; lumberjack
stamps a rotated file with its time, ours are numbered): when the file
would pass ``max_bytes`` it is renamed ``<path>.1`` (older ones shift up to
``<path>.<max_backups>``, the oldest is removed) and a fresh file is begun.
A line is never split across two files. Writes run in a worker thread so a
slow disk holds up only this exporter's task, never the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from drop_explainer.export.channel import RetryableError
from drop_explainer.export.record import Record, Value


@dataclass(frozen=True, slots=True)
class FileSettings:
    path: str
    max_bytes: int = 10 * 1024 * 1024
    max_backups: int = 5


class FileExporter:
    name = "file"

    def __init__(self, settings: FileSettings, resource: Mapping[str, Value]) -> None:
        self.settings = settings
        self.resource = dict(resource)
        self._file: IO[bytes] | None = None
        self._size = 0

    def _open(self) -> IO[bytes]:
        if self._file is None:
            path = Path(self.settings.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        base = self.settings.path
        if self.settings.max_backups < 1:
            os.replace(base, base + ".tmp")
            os.remove(base + ".tmp")
            return
        oldest = f"{base}.{self.settings.max_backups}"
        if os.path.exists(oldest):
            os.remove(oldest)
        for n in range(self.settings.max_backups - 1, 0, -1):
            if os.path.exists(f"{base}.{n}"):
                os.replace(f"{base}.{n}", f"{base}.{n + 1}")
        os.replace(base, f"{base}.1")

    def _write(self, lines: list[bytes]) -> None:
        for line in lines:
            f = self._open()
            if self._size and self._size + len(line) > self.settings.max_bytes:
                f.flush()
                self._rotate()
                f = self._open()
            f.write(line)
            self._size += len(line)
        self._open().flush()

    async def send(self, batch: Sequence[Record]) -> int:
        lines = [(r.json_line(self.resource) + "\n").encode() for r in batch]
        try:
            await asyncio.to_thread(self._write, lines)
        except OSError as exc:
            # A full or read-only disk may come back: keep the batch (bounded) and try again.
            if self._file is not None:
                self._file.close()
                self._file = None
            raise RetryableError(f"{self.settings.path}: {exc.strerror or exc}") from None
        return 0

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
