"""--auth: secure by default, none only when asked for (and always for the demo, which says so)."""

from __future__ import annotations

import io

import pytest

from drop_explainer import cli, settings


def _run(*argv: str) -> settings.Settings:
    return settings.from_args(cli.build_parser().parse_args(["run", *argv]), env={})


def test_kubernetes_is_the_default_and_none_must_be_asked_for() -> None:
    """No flag: TokenReview + SubjectAccessReview; get drops.drop-explainer.io per namespace."""
    s = _run()
    assert (s.auth.mode, s.auth.verb, s.auth.resource, s.auth.group) == ("kubernetes", "get", "drops",
                                                                        "drop-explainer.io")
    assert _run("--auth", "none").auth.mode == "none"
    env = settings.from_args(cli.build_parser().parse_args(["run"]), env={"DROP_EXPLAINER_AUTH": "none"})
    assert env.auth.mode == "none"


@pytest.mark.parametrize(("argv", "message"), [
    (("--auth", "anonymous"), "--auth: expected kubernetes or none"),
    (("--auth-cache-ttl", "-1"), "--auth-cache-ttl"),
    (("--peer-max-bytes", "10"), "--peer-max-bytes"),
    (("--peer-max-bytes", "4096", "--peer-inflight-bytes", "1024"), "--peer-inflight-bytes"),
])
def test_bad_auth_and_peer_limits_are_refused_by_name(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(settings.SettingsError, match=message.replace("-", r"\-")):
        _run(*argv)


def test_the_demo_refuses_kubernetes_auth_it_cannot_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo has no API server: --auth kubernetes is a usage error, not a demo anyone can read silently."""
    monkeypatch.delenv("DROP_EXPLAINER_AUTH", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--auth", "kubernetes"], out=io.StringIO())
    assert exit_info.value.code == 2


def test_the_demo_says_it_checks_no_tokens() -> None:
    """`drop-explainer demo` prints that it runs with --auth none before anything else."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(settings.ENV_PREFIX)}
    proc = subprocess.Popen([sys.executable, "-m", "drop_explainer.cli", "demo", "--port", "0", "--log-level",
                             "error"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert first.startswith("drop-explainer demo: --auth none: no tokens are checked"), first
