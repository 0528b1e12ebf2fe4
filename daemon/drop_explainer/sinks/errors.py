"""Errors of the sinks, each naming the file or sink at fault.

The drop store is the one sink with a file; an operator who sees "store
unreadable" at startup must know which file to move aside, so the path is
always in the message.
"""

from __future__ import annotations


class SinkError(Exception):
    """Base for every sink error."""


class StoreError(SinkError):
    """The drop store failed; names the store file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"drop store {path}: {reason}")
        self.path = path
        self.reason = reason


class StoreUnreadable(StoreError):
    """The file is not a drop store we can read: corrupt, unreadable, another program's, a newer schema."""


class StoreWriteFailed(StoreError):
    """A write did not commit (disk full, I/O error); nothing of it is on disk, it is retried on the next flush."""
