"""Progress of `explain --flows` on a terminal, and the summary line at its end.

480,000 lines take ~20 s and printed nothing until done. On a terminal
(stderr a TTY) one line is redrawn at most twice a second: records read, how
the file's size, the rate. Never when stderr is a file or a pipe (a log
must not fill with carriage returns). The summary is printed either way, on
stderr, so stdout stays the answer alone (JSON lines stay parseable).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TextIO

CHECK_EVERY = 512
"""Records between clock reads: the check costs nothing beside explaining."""
REDRAW_S = 0.5


class Progress:
    def __init__(self, err: TextIO, path: str, *, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None) -> None:
        self.err, self.path, self.clock = err, path, clock
        self.shown = err.isatty() if tty is None else tty
        try:
            self.size = os.path.getsize(path)
        except OSError:
            self.size = 0
        self.started = self.last = clock()
        self.records = 0
        self.drawn = False

    def tick(self) -> None:
        """One record read."""
        self.records += 1
        if not self.shown or self.records % CHECK_EVERY:
            return
        now = self.clock()
        if now - self.last < REDRAW_S:
            return
        self.last = now
        rate = self.records / max(now - self.started, 1e-9)
        of = f" of a {self.size / 1e6:,.1f} MB file" if self.size else ""
        self.err.write(f"\rexplain: {self.records:,} records read{of}, {rate:,.0f}/s, {now - self.started:.0f} s ...")
        self.err.flush()
        self.drawn = True

    def summary(self, *, dropped: int, kinds: int, malformed: int, unexplainable: int, other: int) -> str:
        """The last line: what was read and found, and how long it took."""
        if self.drawn:
            self.err.write("\r\033[K")  # the progress line gives way to the summary
        took = self.clock() - self.started
        line = (f"explain: {self.path}: {self.records:,} records in {took:.1f} s: {dropped:,} dropped or audit "
                f"flow(s) in {kinds:,} kind(s) of drop, {other:,} of other verdicts, {malformed:,} malformed "
                f"line(s) skipped, {unexplainable:,} unexplainable")
        self.err.write(line + "\n")
        self.err.flush()
        return line
