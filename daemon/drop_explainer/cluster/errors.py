"""Errors of the cluster-state layer, each naming where the fault is."""

from __future__ import annotations


class StateError(Exception):
    """Base for every cluster-state error."""


class ObjectError(StateError):
    """A Kubernetes object is malformed; names the object and the field."""

    def __init__(self, obj: str, field: str, reason: str) -> None:
        super().__init__(f"{obj}: field {field}: {reason}")
        self.obj = obj
        self.field = field
        self.reason = reason


class StateFileError(StateError):
    """A state file cannot be used; names the file (and the object when known)."""

    def __init__(self, path: str, reason: str, *, obj: str | None = None, field: str | None = None) -> None:
        where = path if obj is None else f"{path}: {obj}"
        if field is not None:
            where = f"{where}: field {field}"
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.obj = obj
        self.field = field
        self.reason = reason
