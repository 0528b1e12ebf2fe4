"""--tls-* and --api-*: plaintext and the documented limits by default, contradictions refused by name."""

from __future__ import annotations

import pytest

from drop_explainer import cli, settings


def _run(*argv: str) -> settings.Settings:
    return settings.from_args(cli.build_parser().parse_args(["run", *argv]), env={})


def test_plaintext_and_the_documented_limits_by_default() -> None:
    s = _run()
    assert s.tls is None
    assert s.peers.scheme == "http"
    assert s.costs == settings.CostSettings(rate=5.0, burst=20, concurrency=1, fanout_concurrency=8,
                                            deadline_s=10.0, whatif_cache_bytes=16 * 1024 * 1024)


def test_a_serving_pair_turns_on_https_for_the_api_and_the_peers() -> None:
    s = _run("--tls-cert", "/tls/tls.crt", "--tls-key", "/tls/tls.key", "--tls-client-ca", "/tls/ca.crt",
             "--tls-require-client-cert", "true", "--tls-peer-server-name", "drop-explainer.drop-explainer.svc")
    assert s.tls == settings.ServingTls("/tls/tls.crt", "/tls/tls.key", "/tls/ca.crt", True, None,
                                        "drop-explainer.drop-explainer.svc")
    assert s.peers.scheme == "https"


@pytest.mark.parametrize(("argv", "message"), [
    (("--tls-cert", "/tls/tls.crt"), "--tls-cert and --tls-key go together"),
    (("--tls-key", "/tls/tls.key"), "--tls-cert and --tls-key go together"),
    (("--tls-client-ca", "/tls/ca.crt"), "need --tls-cert and --tls-key"),
    (("--tls-cert", "a", "--tls-key", "b", "--tls-require-client-cert", "true"), "needs --tls-client-ca"),
    (("--api-rate", "-1"), "--api-rate"),
    (("--api-burst", "0"), "--api-burst"),
    (("--api-concurrency", "0"), "--api-concurrency"),
    (("--api-deadline", "0"), "--api-deadline"),
    (("--whatif-cache-bytes", "-5"), "--whatif-cache-bytes"),
])
def test_contradictions_are_refused_by_name(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(settings.SettingsError, match=message):
        _run(*argv)
