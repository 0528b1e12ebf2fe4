"""Running the whole daemon inside a test, and talking to it over HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from drop_explainer import app, cli
from drop_explainer.pipeline import StateSource
from drop_explainer.settings import Settings, from_args


def run_settings(*argv: str) -> Settings:
    """`drop-explainer run` settings on a free loopback port; later flags override these defaults."""
    args = cli.build_parser().parse_args(["run", "--listen", "127.0.0.1", "--port", "0", "--events", "false",
                                          "--mode", "single", "--auth", "none", *argv])
    return from_args(args, env={})


@contextlib.asynccontextmanager
async def running(settings: Settings, state: StateSource | None = None,
                  timeout: float = 20.0) -> AsyncIterator[app.Daemon]:
    """The daemon as a task, up and listening; cancelled on exit, as SIGTERM does."""
    started: asyncio.Future[app.Daemon] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(app.serve(settings, state=state, on_started=started.set_result))
    done, _ = await asyncio.wait([started, task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield started.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll check (plain or async) until it returns something truthy, or return the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def http_get(port: int, path: str, **headers: str) -> tuple[int, str]:
    """(status, body); (0, "") while nothing listens yet."""
    with contextlib.suppress(aiohttp.ClientError):
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r:
            return r.status, await r.text()
    return 0, ""


async def get_json(port: int, path: str) -> tuple[int, Any]:
    """(status, decoded JSON) of a GET with ?format=json added."""
    sep = "&" if "?" in path else "?"
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}{sep}format=json") as r:
        return r.status, await r.json()
