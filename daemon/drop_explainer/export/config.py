"""What to export and where: built from the --export-* options (settings.py declares them).

Kept apart from settings.py so the exporters' own settings stay beside the
exporters; a wrong value raises ValueError naming the option, which
settings.py turns into its SettingsError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from drop_explainer.export.channel import ChannelSettings
from drop_explainer.export.jsonl import FileSettings
from drop_explainer.export.otlp import OtlpSettings

WHAT: Final = ("new", "updates")


@dataclass(frozen=True, slots=True)
class ExportSettings:
    otlp: OtlpSettings | None = None
    file: FileSettings | None = None
    new: bool = True
    updates: bool = True
    update_interval_s: float = 60.0
    sample: float = 1.0
    channel: ChannelSettings = field(default_factory=ChannelSettings)

    @property
    def enabled(self) -> bool:
        return (self.otlp is not None or self.file is not None) and (self.new or self.updates)


def _headers(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--export-otlp-headers: expected name=value pairs, got {item.partition('=')[0]!r}=...")
        out[key.strip()] = value.strip()
    return out


def from_values(v: Mapping[str, Any]) -> ExportSettings:
    what = tuple(v["export_what"])
    unknown = [w for w in what if w not in WHAT]
    if unknown:
        raise ValueError(f"--export-what: expected some of {', '.join(WHAT)}, got {', '.join(unknown)}")
    if not 0.0 <= v["export_update_sample"] <= 1.0:
        raise ValueError(f"--export-update-sample: {v['export_update_sample']} is not a fraction in 0..1")
    if not 0 < v["export_update_interval"] <= 86400:
        raise ValueError(f"--export-update-interval: {v['export_update_interval']} is not seconds in (0, 86400]")
    if v["export_queue_bytes"] < 4096:
        raise ValueError("--export-queue-bytes must be at least 4096")
    otlp = None
    if v["export_otlp_endpoint"]:
        if bool(v["export_otlp_tls_cert"]) != bool(v["export_otlp_tls_key"]):
            raise ValueError("--export-otlp-tls-cert and --export-otlp-tls-key go together")
        if v["export_otlp_compression"] not in ("none", "gzip"):
            raise ValueError(f"--export-otlp-compression: expected none or gzip, got {v['export_otlp_compression']!r}")
        if v["export_otlp_timeout"] <= 0:
            raise ValueError("--export-otlp-timeout must be a positive number of seconds")
        otlp = OtlpSettings(v["export_otlp_endpoint"], tls=v["export_otlp_tls"],
                            ca_file=v["export_otlp_tls_ca"] or None, cert_file=v["export_otlp_tls_cert"] or None,
                            key_file=v["export_otlp_tls_key"] or None,
                            server_name=v["export_otlp_tls_server_name"] or None,
                            headers=_headers(v["export_otlp_headers"]), timeout_s=v["export_otlp_timeout"],
                            compression=v["export_otlp_compression"])
    file = None
    if v["export_file"]:
        if v["export_file_max_size_mb"] <= 0 or v["export_file_max_backups"] < 0:
            raise ValueError("--export-file-max-size-mb must be positive and --export-file-max-backups >= 0")
        file = FileSettings(v["export_file"], int(v["export_file_max_size_mb"] * 1024 * 1024),
                            v["export_file_max_backups"])
    return ExportSettings(otlp, file, new="new" in what, updates="updates" in what,
                          update_interval_s=v["export_update_interval"], sample=v["export_update_sample"],
                          channel=ChannelSettings(max_queue_bytes=v["export_queue_bytes"]))
