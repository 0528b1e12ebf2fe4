"""Errors of the flow sources, each naming the setting or peer at fault."""

from __future__ import annotations


class SourceError(Exception):
    """Base for every source error."""


class ConfigError(SourceError):
    """A source is configured in a way that cannot work; raised before connecting."""


class MissingFileError(ConfigError):
    """A file named by a setting (CA bundle, client certificate or key) does not exist or cannot be read."""

    def __init__(self, setting: str, path: str, reason: str = "no such file") -> None:
        super().__init__(f"{setting}: {path}: {reason}")
        self.setting = setting
        self.path = path


class TlsVerificationFailed(SourceError):
    """The TLS handshake with the server failed (wrong CA, wrong server name, no client certificate).

    The source keeps retrying (certificates get rotated), so this is not
    raised to the caller: it is logged and kept as ``stats.last_error``.
    """

    def __init__(self, target: str, details: str, *, hint: str | None = None) -> None:
        said = details if hint is None or hint in details else f"{details} ({hint})"
        super().__init__(f"TLS verification failed connecting to {target}: {said}")
        self.target = target
        self.details = details
        self.hint = hint
        """What the failure probably means, e.g. "the server requires a client certificate"; None if unclear."""
