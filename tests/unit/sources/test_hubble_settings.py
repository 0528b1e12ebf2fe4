"""Configuration errors of the Hubble source are raised before any connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from drop_explainer.sources import errors, hubble


def test_default_target_is_the_local_hubble_socket() -> None:
    """Out of the box the source reads the node's own UNIX socket, plaintext, drops and audits only."""
    settings = hubble.HubbleSettings()
    assert settings.target == "unix:///var/run/cilium/hubble.sock"
    assert settings.tls is None
    assert settings.verdicts == ("DROPPED", "AUDIT")


def test_missing_ca_file_names_the_setting_and_path(tmp_path: Path) -> None:
    """A CA bundle that is not there fails at construction, naming tls.ca_file."""
    missing = tmp_path / "ca.crt"
    settings = hubble.HubbleSettings(target="127.0.0.1:4244", tls=hubble.TlsSettings(ca_file=str(missing)))
    with pytest.raises(errors.MissingFileError) as error:
        hubble.HubbleSource(settings)
    assert error.value.setting == "tls.ca_file"
    assert str(missing) in str(error.value)


def test_client_certificate_without_key_is_a_config_error(tmp_path: Path) -> None:
    """mTLS needs both halves of the client identity."""
    cert = tmp_path / "client.crt"
    cert.write_text("x")
    tls = hubble.TlsSettings(cert_file=str(cert))
    with pytest.raises(errors.ConfigError, match="cert_file and key_file"):
        hubble.HubbleSource(hubble.HubbleSettings(target="127.0.0.1:4244", tls=tls))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"verdicts": ("DENIED",)}, "unknown verdict"),
    ({"queue_size": 0}, "queue_size"),
    ({"backoff_initial_s": 0.0}, "backoff"),
    ({"target": ""}, "target"),
    ({"resume_overlap_ns": 5_000_000_000}, "resume_overlap_ns"),
])
def test_impossible_settings_are_config_errors(overrides: dict[str, object], message: str) -> None:
    """Each impossible setting is rejected with a message naming it."""
    settings = hubble.HubbleSettings(**overrides)  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError, match=message):
        settings.validate()
