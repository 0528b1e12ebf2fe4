"""`drop-explainer tail`: follow /drops/stream of a running daemon, as `hubble observe -f` follows flows.

From now on (the stream has no history: `curl .../drops?since=1h` has it),
with the stream's filters as flags. Text by default (the daemon renders it),
JSON lines with ``-o json``. Ends on Ctrl-C (exit 0), when the daemon cuts the
stream off (the reason on stderr, exit 3), or on a refusal (its reason, exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from typing import TextIO

import aiohttp

EXIT_REFUSED = 1
EXIT_CUT_OFF = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("DROP_EXPLAINER_URL", "http://localhost:8080"),
                   help="the daemon's API [default: $DROP_EXPLAINER_URL or http://localhost:8080]")
    p.add_argument("-n", "--namespace", help="only drops of pods in this namespace")
    p.add_argument("--pod", help="only drops of pods of this name")
    p.add_argument("--direction", choices=["ingress", "egress"])
    p.add_argument("--policy", metavar="NS/NAME", help="only drops decided by this policy")
    p.add_argument("--trap", help="only drops showing this trap")
    p.add_argument("--all", action="store_true", help="every explained drop, not only new signatures")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.add_argument("--token-file", metavar="FILE",
                   help="a bearer token for --auth kubernetes [default: $DROP_EXPLAINER_TOKEN]")


def query_of(args: argparse.Namespace) -> dict[str, str]:
    q = {"format": args.output}
    for name in ("namespace", "pod", "direction", "policy", "trap"):
        if getattr(args, name) is not None:
            q[name] = getattr(args, name)
    if args.all:
        q["all"] = "true"
    return q


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get("DROP_EXPLAINER_TOKEN") or None


async def follow(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    token = _token(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = args.url.rstrip("/") + "/drops/stream"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url, params=query_of(args), headers=headers) as r:
        if r.status != 200:
            body = (await r.text())[:2000].strip()
            err.write(f"drop-explainer tail: {url}: {r.status}: {body.removeprefix('error: ')}\n")
            return EXIT_REFUSED
        async for raw in r.content:
            line = raw.decode(errors="replace")
            if args.output == "json":
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "heartbeat":
                        continue
                    if event.get("event") == "cut_off":
                        out.write(line)
                        out.flush()
                        err.write(f"drop-explainer tail: the daemon ended the stream: {event.get('reason')}\n")
                        return EXIT_CUT_OFF
            elif line.startswith("# stream ended: "):
                err.write(f"drop-explainer tail: the daemon ended the stream: {line[16:]}")
                return EXIT_CUT_OFF
            out.write(line)
            out.flush()
    err.write("drop-explainer tail: the daemon closed the stream\n")
    return EXIT_CUT_OFF


def cmd_tail(args: argparse.Namespace, out: TextIO) -> int:
    try:
        return asyncio.run(follow(args, out, sys.stderr))
    except KeyboardInterrupt:
        return 0
    except aiohttp.ClientError as exc:
        print(f"drop-explainer tail: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
