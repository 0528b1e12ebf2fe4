"""Cost limits through the real daemon on loopback: rate per caller, deadline, the what-if cache.

No timing is assumed: the rate is set so low (one token per 1,000 s) that a
refill between two requests cannot happen on any machine, and the deadline
so short that no what-if can finish within it.
"""

from __future__ import annotations

import contextlib

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from drop_explainer import app, demo
from drop_explainer.cluster.loading import load_state
from drop_explainer.pipeline import StaticState
from tests.daemon_support import run_settings, running

WHATIF = "/whatif?from=frontend/pod-a&to=backend/pod-b&port=8080"


def daemon(*extra: str) -> contextlib.AbstractAsyncContextManager[app.Daemon]:
    return running(run_settings("--store-path", ":memory:", *extra), StaticState(load_state(demo.incident_dir())))


async def get(port: int, path: str, source: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a GET sent from the loopback address ``source`` (each one is a caller)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as s, s.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, dict(r.headers), await r.text()


def counter(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_a_caller_over_the_rate_gets_429_with_retry_after_and_healthz_still_answers() -> None:
    async with daemon("--api-rate", "0.001", "--api-burst", "2") as d:
        assert d.port is not None
        first = [await get(d.port, WHATIF) for _ in range(2)]
        assert [s for s, _, _ in first] == [200, 200]
        status, headers, body = await get(d.port, WHATIF)
        assert status == 429, body
        assert "over the rate of 0.001 requests/s per caller" in body
        assert int(headers["Retry-After"]) >= 1
        # The probes are never limited, whoever asks.
        assert (await get(d.port, "/healthz"))[0] == 200
        assert (await get(d.port, "/readyz"))[0] == 200
        # Another caller (under --auth none: another address) has its own bucket.
        assert (await get(d.port, WHATIF, source="127.0.0.2"))[0] == 200
        metrics = (await get(d.port, "/metrics", source="127.0.0.3"))[2]
    assert counter(metrics, "drop_explainer_api_refused_total", reason="rate") == 1


async def test_a_request_past_the_deadline_is_504_with_the_reason() -> None:
    async with daemon("--api-deadline", "0.000001") as d:
        assert d.port is not None
        status, _, body = await get(d.port, WHATIF)
        assert status == 504, body
        assert "no answer within 1e-06 s (--api-deadline)" in body
        assert (await get(d.port, "/healthz"))[0] == 200


async def test_a_repeated_whatif_is_answered_from_the_cache_of_this_state() -> None:
    async with daemon() as d:
        assert d.port is not None
        once = await get(d.port, WHATIF)
        twice = await get(d.port, WHATIF)
        metrics = (await get(d.port, "/metrics"))[2]
    assert once[0] == twice[0] == 200
    assert once[2] == twice[2]
    assert once[2].startswith("DENIED frontend/pod-a -> backend/pod-b TCP/8080")
    assert counter(metrics, "drop_explainer_api_whatif_cache_total", result="miss") == 1
    assert counter(metrics, "drop_explainer_api_whatif_cache_total", result="hit") == 1
