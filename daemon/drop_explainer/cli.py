"""The ``drop-explainer`` command: parse arguments, load state, hand over.

Each subcommand is a thin shell around pure functions, so everything it
prints is also testable without a process.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from drop_explainer.cluster.errors import StateError
from drop_explainer.cluster.loading import load_state
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy import queries
from drop_explainer.policy.engine import Engine

EXIT_BAD_INPUT = 2
EXIT_DENIED = 1


def example_state_path() -> Path:
    """The bundled incident state, so a newcomer has something to ask about."""
    return Path(str(resources.files("drop_explainer") / "examples" / "incident"))


def _add_state(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="PATH", help="YAML/JSON file or directory of Kubernetes objects "
                   "(default: the bundled example incident; 'example' names it explicitly)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drop-explainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("whatif", help="would this connection be allowed, and which policies decide it?")
    _add_state(w)
    w.add_argument("--from", dest="source", metavar="NS/POD|IP")
    w.add_argument("--to", dest="destination", metavar="NS/POD|IP")
    w.add_argument("--port", type=int)
    w.add_argument("--protocol", default="TCP", type=str.upper, choices=["TCP", "UDP", "SCTP"])
    w.add_argument("--batch", metavar="FILE|-", help="JSON lines of {from, to, port, protocol}; one answer per line")
    w.add_argument("-o", "--output", choices=["text", "json"], default="text")
    w.set_defaults(func=cmd_whatif)
    return parser


def _state(args: argparse.Namespace) -> ClusterState:
    path = args.state
    if path is None or path == "example":
        path = example_state_path()
    return load_state(path)


def cmd_whatif(args: argparse.Namespace, out: TextIO) -> int:
    engine = Engine(_state(args))
    if args.batch is not None:
        if args.source or args.destination or args.port:
            raise UsageError("--batch cannot be combined with --from/--to/--port")
        if args.batch == "-":
            run_batch(engine, sys.stdin, out)
        else:
            with Path(args.batch).open(encoding="utf-8") as lines:
                run_batch(engine, lines, out)
        return 0
    if not (args.source and args.destination and args.port):
        raise UsageError("whatif needs --from, --to and --port (or --batch)")
    try:
        query = queries.Query(args.source, args.destination, queries.parse_port(args.port), args.protocol)
        answer = whatif(engine, query)
    except queries.BadQuery as exc:
        raise UsageError(str(exc)) from None
    if args.output == "json":
        out.write(json.dumps(answer, indent=2) + "\n")
    else:
        out.write(render_verdict_text(answer))
    return 0 if answer["allowed"] else EXIT_DENIED


def whatif(engine: Engine, query: queries.Query) -> dict[str, Any]:
    conn = queries.connection(engine.state, query)
    return queries.verdict_json(query, conn, engine.evaluate(conn))


def run_batch(engine: Engine, lines: Iterable[str], out: TextIO) -> None:
    """One answer line per input line, in order; a bad line gets an error object."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            answer = whatif(engine, queries.parse_query(json.loads(line)))
        except json.JSONDecodeError as exc:
            answer = {"error": f"not JSON: {exc.msg}", "line": number}
        except queries.BadQuery as exc:
            answer = {"error": str(exc), "line": number}
        out.write(json.dumps(answer, separators=(",", ":")) + "\n")


def _direction_text(name: str, d: dict[str, Any]) -> str:
    if not d["isolated"]:
        return f"  {name}: not isolated (no policy selects this end for {name})\n"
    pols = ", ".join(f"{p['namespace']}/{p['name']}" for p in d["policies"])
    if d["allowed"]:
        by = ", ".join(f"{p['namespace']}/{p['name']} rule {p['rule']}" for p in d["allowed_by"])
        return f"  {name}: allowed by {by} (isolated by {pols})\n"
    return f"  {name}: DENIED: isolated by {pols} and no rule admits this connection\n"


def render_verdict_text(answer: dict[str, Any]) -> str:
    word = "ALLOWED" if answer["allowed"] else "DENIED"
    head = f"{word}: {answer['from']} -> {answer['to']} {answer['protocol']}/{answer['port']}\n"
    return head + _direction_text("egress", answer["egress"]) + _direction_text("ingress", answer["ingress"])


class UsageError(Exception):
    """Bad arguments: printed with the usage hint, exit code 2."""


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace, TextIO], int] = args.func
    try:
        return func(args, out or sys.stdout)
    except UsageError as exc:
        parser.error(str(exc))
    except StateError as exc:
        print(f"drop-explainer: cannot load cluster state: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"drop-explainer: {exc}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
