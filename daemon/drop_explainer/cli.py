"""The ``drop-explainer`` command: parse arguments, load state, hand over.

Each subcommand is a thin shell around pure functions, so everything it
prints is also testable without a process.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any, TextIO

from drop_explainer import app, demo, logs, progress, settings, tail
from drop_explainer.api.probes import ProbePortInUse
from drop_explainer.cluster.errors import StateError
from drop_explainer.cluster.loading import load_state
from drop_explainer.cluster.state import ClusterState
from drop_explainer.explain import combining, enforcement, grouping, rendering, services, unevaluated
from drop_explainer.explain.model import Fix
from drop_explainer.flows.model import Flow
from drop_explainer.policy import profiles, queries
from drop_explainer.policy.engine import Engine

EXIT_BAD_INPUT = 2
EXIT_DENIED = 1


def example_state_path() -> Path:
    """The bundled incident state, so a newcomer has something to ask about."""
    return Path(str(resources.files("drop_explainer") / "examples" / "incident"))


def _add_state(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="PATH", help="YAML/JSON file or directory of Kubernetes objects; 'example' "
                   "is the bundled incident (default: the cluster of the current kubeconfig context)")
    p.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig to read the cluster from (default: $KUBECONFIG "
                   "or ~/.kube/config)")
    p.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    p.add_argument("--cni", metavar="PROFILE", help="CNI profile deciding node-local traffic: "
                   f"{', '.join(profiles.NAMES)}, with settings after commas (cilium,allow-localhost=policy); "
                   "default: the detected enforcer's, else spec")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drop-explainer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("whatif", help="would this connection be allowed, and which policies decide it?")
    _add_state(w)
    w.add_argument("--from", dest="source", metavar="NS/POD|NAME|node/NAME|IP",
                   help="the source: NAMESPACE/POD, a unique pod or node name, node/NAME, svc/NS/NAME or an address")
    w.add_argument("--to", dest="destination", metavar="NS/POD|svc/NS/NAME|IP",
                   help="the destination; a Service (svc/NS/NAME, NS/NAME when no such pod, a cluster IP) is "
                        "judged at each ready backend")
    w.add_argument("--port", help="a number, or a port name of the destination pod or Service")
    w.add_argument("--protocol", default="TCP", type=str.upper, choices=["TCP", "UDP", "SCTP"])
    w.add_argument("--batch", metavar="FILE|-", help="JSON lines of {from, to, port, protocol}; one answer per line")
    w.add_argument("-o", "--output", choices=["text", "json"], default="text")
    w.add_argument("--explain", action="store_true",
                   help="with --batch: add the full explanation to each answer (slower)")
    w.set_defaults(func=cmd_whatif)
    e = sub.add_parser("explain", help="explain every dropped flow in a file, grouping identical drops")
    _add_state(e)
    e.add_argument("--flows", required=True, metavar="FILE",
                   help="flows: our JSON lines, hubble observe -o json/jsonpb, Hubble exporter files; gzip ok")
    e.add_argument("-o", "--output", choices=["text", "json"], default="text")
    e.set_defaults(func=cmd_explain)
    s = sub.add_parser("state", help="what the loaded cluster state holds, and which component enforces policy")
    _add_state(s)
    s.set_defaults(func=cmd_state)
    r = sub.add_parser("run", help="the daemon: read flows, explain drops, serve the API and /metrics")
    settings.add_arguments(r)
    r.set_defaults(func=cmd_run)
    t = sub.add_parser("tail", help="follow a running daemon's new drops from now on (GET /drops/stream)")
    tail.add_arguments(t)
    t.set_defaults(func=tail.cmd_tail)
    d = sub.add_parser("demo", help="the whole daemon on the bundled incident: no cluster, no Cilium needed")
    settings.add_arguments(d)
    d.add_argument("--replay-every", type=float, default=10.0, metavar="SECONDS",
                   help="replay the recorded drops with fresh times this often (0: once) [default: 10]")
    d.set_defaults(func=cmd_demo)
    return parser


def version() -> str:
    """The installed package's version (the source tree's when run from a checkout)."""
    try:
        return metadata.version("drop-explainer")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _engine(args: argparse.Namespace, state: ClusterState | None = None) -> Engine:
    state = _state(args) if state is None else state
    if not args.cni:
        return Engine(state)
    try:
        return Engine(state, profiles.parse(args.cni))
    except profiles.ProfileError as exc:
        raise UsageError(f"--cni: {exc}") from None


def _state(args: argparse.Namespace) -> ClusterState:
    if args.state is None:
        # As kubectl users expect: the cluster of the current context, one list of each kind.
        from drop_explainer.cluster import kubeapi

        return kubeapi.list_state(args.kubeconfig, args.context)
    return load_state(example_state_path() if args.state == "example" else args.state)


def cmd_state(args: argparse.Namespace, out: TextIO) -> int:
    state = _state(args)
    out.write(f"{len(state.namespaces)} namespaces, {len(state.pods)} pods, {len(state.nodes)} nodes, "
              f"{len(state.services)} services, {len(state.policies)} NetworkPolicies\n")
    out.write(_engine(args, state).profile.sentence() + "\n")
    if state.compiled or state.refused:
        by_kind: dict[str, int] = {}
        for cp in state.compiled.values():
            by_kind[cp.kind] = by_kind.get(cp.kind, 0) + 1
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())) or "none"
        out.write(f"{len(state.compiled)} policies of other kinds evaluated: {kinds}; "
                  f"{len(state.refused)} refused as invalid (no effect in the cluster either)\n")
        for bad in state.refused[:20]:
            out.write(f"  refused: {bad.describe()}\n")
    if state.not_evaluated:
        kinds = ", ".join(f"{kind} {n}" for kind, n in unevaluated.counts(state.not_evaluated))
        out.write(f"{len(state.not_evaluated)} policies of kinds not evaluated: {kinds} (answers on the pods they "
                  "select are marked incomplete)\n")
        for entry in state.not_evaluated[:20]:
            out.write(f"  not evaluated: {entry.describe()}\n")
        if len(state.not_evaluated) > 20:
            out.write(f"  ... and {len(state.not_evaluated) - 20} more\n")
    found = state.enforcer
    if found is None:
        out.write("policy enforcer: not detected (the state has no DaemonSets or CRDs to tell from)\n")
        return 0
    out.write(found.summary() + "\n")
    for line in found.evidence:
        out.write(f"  evidence: {line}\n")
    if found.also:
        out.write(f"  also seen: {', '.join(found.also)}\n")
    note = found.not_enforced_note()
    if note is not None and state.policies:
        out.write(f"{note.replace(': this connection is not blocked by policy.', '.')}\n")
    return 0


def cmd_whatif(args: argparse.Namespace, out: TextIO) -> int:
    engine = _engine(args)
    if args.batch is not None:
        if args.source or args.destination or args.port:
            raise UsageError("--batch cannot be combined with --from/--to/--port")
        if args.batch == "-":
            run_batch(engine, sys.stdin, out, explain=args.explain)
        else:
            with Path(args.batch).open(encoding="utf-8") as lines:
                run_batch(engine, lines, out, explain=args.explain)
        return 0
    if not (args.source and args.destination and args.port):
        raise UsageError("whatif needs --from, --to and --port (or --batch)")
    try:
        query = queries.Query(args.source, args.destination, queries.parse_port(args.port), args.protocol)
        conn = queries.connection(engine.state, query)
        expl = services.explain(engine, conn)
    except queries.AmbiguousQuery as exc:
        raise UsageError(f"{exc}: {', '.join(exc.candidates)}") from None
    except queries.BadQuery as exc:
        raise UsageError(str(exc)) from None
    if args.output == "json":
        answer = services.answer_json(query, conn, expl)
        out.write(json.dumps(enforcement.label_answer(answer, engine.state.enforcer), indent=2) + "\n")
    else:
        out.write(rendering.explanation_text(expl))
    # Nothing enforces policy: the connection is not blocked, whatever the policies say.
    return 0 if services.allowed(expl) or expl.not_enforced is not None else EXIT_DENIED


def whatif(engine: Engine, query: queries.Query, *, explain: bool = False) -> dict[str, Any]:
    conn = queries.connection(engine.state, query)
    if not explain and conn.destination.service is None:
        decided = engine.evaluate(conn)
        verdict = queries.verdict_json(query, conn, decided, engine.profile)
        verdict |= unevaluated.verdict_fields(engine.state.not_evaluated, conn)  # never a silent "allowed"
        if decided.unsure:
            verdict |= {"complete": False, "not_evaluated": [*verdict["not_evaluated"], *decided.unsure]}
        return enforcement.label_answer(verdict, engine.state.enforcer)
    # A Service is judged at each backend, which needs the full path even without --explain.
    answer = services.answer_json(query, conn, services.explain(engine, conn, blast_radius=explain))
    if not explain:
        expl = answer.pop("explanation")
        answer |= {"complete": expl.get("complete", True), "not_evaluated": expl.get("not_evaluated", [])}
    return enforcement.label_answer(answer, engine.state.enforcer)


def run_batch(engine: Engine, lines: Iterable[str], out: TextIO, *, explain: bool = False) -> None:
    """One answer line per input line, in order; a bad line gets an error object."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            answer = whatif(engine, queries.parse_query(json.loads(line)), explain=explain)
        except json.JSONDecodeError as exc:
            answer = {"error": f"not JSON: {exc.msg}", "line": number}
        except queries.BadQuery as exc:
            answer = {"error": str(exc), "line": number}
        out.write(json.dumps(answer, separators=(",", ":")) + "\n")


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here: the file readers pull in protobuf, which whatif never needs.
    from drop_explainer.sources import dedup, flowfiles

    engine = _engine(args)
    malformed: list[str] = []
    # Hubble reports a denied packet twice and every SYN retransmit again;
    # count distinct packets and attempts as the live source does.
    reports = dedup.FileCounter()
    shown = progress.Progress(sys.stderr, args.flows)

    def flows() -> Iterator[Flow]:
        for item in flowfiles.read_flows(args.flows):
            shown.tick()
            if isinstance(item, flowfiles.MalformedRecord):
                malformed.append(f"line {item.line_no}: {item.reason}")
            else:
                yield reports.count(item)

    grouped = grouping.group_drops(engine, flows())
    merged = combining.for_explanations(engine, (g.explanation for g in grouped.groups))
    if args.output == "json":
        for g in grouped.groups:
            out.write(json.dumps(group_json(g), separators=(",", ":")) + "\n")
        if merged:
            # A last line of another shape: the one change per policy that admits every group above.
            out.write(json.dumps({"fixes_for_all": [rendering.fix_json(f) for f in merged]},
                                 separators=(",", ":")) + "\n")
    else:
        out.write(groups_text(grouped, merged))
    for m in malformed:
        print(f"drop-explainer: {args.flows}: skipped malformed {m}", file=sys.stderr)
    shown.summary(dropped=sum(g.flows for g in grouped.groups), kinds=len(grouped.groups), malformed=len(malformed),
                  unexplainable=len(grouped.unexplainable), other=grouped.other_verdicts)
    return 0


def group_json(g: grouping.DropGroup) -> dict[str, Any]:
    src, dst, port, proto, direction = g.signature
    return {
        "signature": {"source_workload": src, "destination": dst, "port": port, "protocol": proto,
                      "direction": direction},
        "flows": g.flows, "packets": g.packets, "connections": g.connections,
        "first_seen": _iso(g.first_ns), "last_seen": _iso(g.last_ns), "nodes": sorted(g.nodes),
        "explanation": rendering.explanation_json(g.explanation),
    }


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def groups_text(grouped: grouping.Grouped, merged: tuple[Fix, ...] = ()) -> str:
    parts = []
    for g in grouped.groups:
        src, dst, port, proto, direction = g.signature
        head = (f"== {src} -> {dst} {proto}/{port} ({direction}): {g.flows} report(s), {g.packets} packet(s), "
                f"{g.connections} connection attempt(s), {_iso(g.first_ns)} .. {_iso(g.last_ns)}")
        parts.append(head + "\n" + rendering.explanation_text(g.explanation))
    if not parts:
        parts.append("No dropped flows in this file.\n")
    if merged:
        parts.append(f"== All {len(grouped.groups)} kinds of drop above: the fixes of each, merged\n"
                     + "\n".join(rendering.fixes_text(merged, what="every drop above")))
    if grouped.unexplainable:
        parts.append(f"{len(grouped.unexplainable)} dropped flow(s) could not be explained: "
                     + "; ".join(sorted(set(grouped.unexplainable))) + "\n")
    return "\n".join(parts)


def _settings(args: argparse.Namespace, **defaults: str) -> settings.Settings:
    """Flags, then DROP_EXPLAINER_* variables, then these defaults, then the built-in ones."""
    env = {**{settings.ENV_PREFIX + k.upper(): v for k, v in defaults.items()}, **os.environ}
    try:
        return settings.from_args(args, env)
    except settings.SettingsError as exc:
        raise UsageError(str(exc)) from None


def _run_async(main: Coroutine[Any, Any, None], log_format: str, log_level: str) -> int:
    """asyncio.run with SIGTERM/SIGINT as an orderly stop (cancel, then every finally runs)."""
    logs.configure(log_format, log_level)

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await main
        except asyncio.CancelledError:
            logging.getLogger("drop_explainer").info("stopped_by_signal")

    try:
        asyncio.run(guarded())
    except BaseExceptionGroup as group:
        # From inside the daemon's task groups: one line, not their nested tracebacks.
        busy = group.subgroup((app.PortInUse, ProbePortInUse))
        if busy is None:
            raise
        first: BaseException = busy
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        print(f"drop-explainer: {first}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    s = _settings(args)
    return _run_async(app.serve(s), s.log_format, s.log_level)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    s = _settings(args, listen="127.0.0.1", store_path=":memory:", mode="single", events="false",
                  node_name="node-2", auth="none")
    if s.auth.mode != "none":
        # The demo has no API server to check tokens against.
        raise UsageError("the demo runs with --auth none only: it has no API server for TokenReview")
    if s.port and _port_taken(s.listen, s.port):
        # Before the banner and the logs: a first run on a busy port reads one line that says what to do.
        print(f"drop-explainer: {app.PortInUse(s.listen, s.port)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out.write("drop-explainer demo: --auth none: no tokens are checked; anyone who reaches "
              f"{s.listen}:{s.port} reads every answer\n")
    out.write(f"drop-explainer demo: try  curl http://localhost:{s.port}/pods/pod-b/drops\n")
    out.flush()
    return _run_async(demo.run(s, replay_every_s=args.replay_every), s.log_format, s.log_level)


def _port_taken(host: str, port: int) -> bool:
    """Whether binding host:port fails as in use (as the daemon binds it: SO_REUSEADDR, so TIME_WAIT is no bar)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False  # the daemon will say what is wrong with the address
    with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(infos[0][4])
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


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
