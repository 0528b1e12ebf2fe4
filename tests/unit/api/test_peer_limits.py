"""Fan-out memory is bounded in bytes: a peer's oversized answer is refused, and says which node."""

from __future__ import annotations

import json

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from drop_explainer.api.peers import Peers
from drop_explainer.cluster.state import ClusterState
from drop_explainer.settings import PeerSettings

LIMIT = 4096
SEEN = web.AppKey("seen", list)


def _peers(urls: dict[str, str], *, inflight: int = 4 * LIMIT) -> Peers:
    settings = PeerSettings("daemonset", urls, "drop-explainer", {}, 8080, 5.0, LIMIT, inflight)
    return Peers(settings, "me", lambda: ClusterState.build([]))


def _app(size: int, *, chunked: bool) -> web.Application:
    body = json.dumps({"drops": [], "pad": "x" * size})
    seen: list[dict[str, str]] = []

    async def drops(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        if not chunked:
            return web.Response(text=body, content_type="application/json")
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()  # no Content-Length: the cap must hold while reading
        await resp.prepare(request)
        for i in range(0, len(body), 1000):
            await resp.write(body[i:i + 1000].encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/drops", drops)
    app[SEEN] = seen
    return app


async def test_an_answer_over_the_byte_cap_makes_that_node_missing_not_the_whole_answer() -> None:
    """Two peers: the small answer is used, the large one (declared or streamed) is refused and named."""
    async with TestServer(_app(100, chunked=False), host="127.0.0.1") as small, \
            TestServer(_app(LIMIT * 3, chunked=False), host="127.0.0.1") as declared, \
            TestServer(_app(LIMIT * 3, chunked=True), host="127.0.0.1") as streamed:
        peers = _peers({"small": str(small.make_url("")), "declared": str(declared.make_url("")),
                        "streamed": str(streamed.make_url(""))})
        async with ClientSession() as session:
            out = await peers.fan_out(session, "/drops", {}, headers=[("Impersonate-User", "alice"),
                                                                     ("Impersonate-Group", "a"),
                                                                     ("Impersonate-Group", "b")])
        assert list(out.answers) == ["small"]
        assert out.missing == ["declared", "streamed"]
        assert peers.refused_too_large == 2
        sent = small.app[SEEN][0]
        assert sent["Impersonate-User"] == "alice"


async def test_in_flight_answers_wait_for_the_byte_budget_instead_of_growing_it() -> None:
    """A budget of one answer: eight peers are still all answered, one read at a time."""
    async with TestServer(_app(100, chunked=True), host="127.0.0.1") as server:
        url = str(server.make_url(""))
        peers = _peers({f"n{i}": url for i in range(8)}, inflight=LIMIT)
        async with ClientSession() as session:
            out = await peers.fan_out(session, "/drops", {})
        assert sorted(out.answers) == [f"n{i}" for i in range(8)]
        assert out.missing == []
