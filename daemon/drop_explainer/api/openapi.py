"""The OpenAPI 3.1 description served at /openapi.json.

Kept beside the routes and checked by a test that every route is described
and every described parameter is accepted, so clients can rely on it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from drop_explainer import __version__
from drop_explainer.api.params import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_VALUE_CHARS,
    PROTOCOL_PATTERN,
    TIME_FORMS,
    WHATIF_END_CHARS,
)
from drop_explainer.explain.traps import TITLES

PARAMETERS_NOTE = ("Parameters not listed for a route, and a parameter given twice, are refused with 400 "
                   "(a typo must not silently widen the answer).")


# A number 1-65535 or a port name (IANA_SVC_NAME: up to 15 of a-z, 0-9 and '-', with a letter). The
# pattern is looser than the server's check (params.PORT_NAME_PATTERN, MAX_PORT): JSON Schema has no
# number range for a string, and schema-driven generators do not take lookaheads.
PORT_SCHEMA = {"type": "string", "maxLength": 15,
               "pattern": "^(?:[1-9][0-9]{0,4}|[a-z0-9-]{0,14}[a-z][a-z0-9-]{0,14})$"}
WHATIF_END = {"type": "string", "minLength": 1, "maxLength": WHATIF_END_CHARS}


def _param(name: str, where: str, description: str, schema: dict[str, Any], required: bool = False, *,
           example: Any = None) -> dict[str, Any]:
    out = {"name": name, "in": where, "description": description, "required": required or where == "path",
           "schema": schema}
    if example is not None:
        out["example"] = example
    return out


_STR = {"type": "string"}
# The lengths are in the patterns too, so that NAMESPACE/NAME is stated exactly.
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
NAMESPACE_SCHEMA = {"type": "string", "pattern": f"^{_LABEL}$", "minLength": 1, "maxLength": 63}
NAME_SCHEMA = {"type": "string", "pattern": f"^{_SUBDOMAIN}$", "minLength": 1, "maxLength": 253}
_FRAC = r"(\.[0-9]{1,9})?"
TIME_SCHEMA = {
    "type": "string", "minLength": 1, "maxLength": MAX_VALUE_CHARS,
    # The three forms params.time_ns reads; a value matching this can still be refused when it names no
    # calendar date (02-30) or lies outside int64 nanoseconds (years 1677 to 2262).
    "pattern": (f"^([0-9]{{1,20}}{_FRAC}[smhd]|[0-9]{{1,11}}{_FRAC}|[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}[Tt ]"
                f"[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}{_FRAC}([Zz]|[+-][0-9]{{2}}:[0-9]{{2}}))$"),
}
FORMAT = _param("format", "query", "json or text (default: text, or JSON when Accept: application/json).",
                {"type": "string", "enum": ["json", "text"]})
SCOPE = _param("scope", "query", "local: only this instance's drops; cluster (default): ask the instance "
               "holding them, or all instances.", {"type": "string", "enum": ["local", "cluster"]})
FILTERS = [
    _param("since", "query", f"Only drops seen at or after this time: {TIME_FORMS}. Epoch seconds of 12 digits or "
           "more look like milliseconds (or finer) and are refused, saying so.", TIME_SCHEMA, example="15m"),
    _param("until", "query", "Only drops seen at or before this time; same forms as since, not before it.",
           TIME_SCHEMA),
    _param("direction", "query", "Only drops in this direction.", {"type": "string", "enum": ["ingress", "egress"]}),
    _param("policy", "query", "Only drops decided by this policy, NAMESPACE/NAME.",
           {"type": "string", "pattern": f"^{_LABEL}/{_SUBDOMAIN}$", "maxLength": 63 + 1 + 253},
           example="backend/default-deny"),
    _param("trap", "query", "Only drops showing this trap.", {"type": "string", "enum": sorted(TITLES)}),
    _param("limit", "query", f"At most this many kinds of drop (default {DEFAULT_LIMIT}); above {MAX_LIMIT} is "
           "refused with 400, not clamped.", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    FORMAT, SCOPE,
]
NS = _param("namespace", "path", "Namespace.", NAMESPACE_SCHEMA, example="backend")
POD = _param("pod", "path", "Pod name.", NAME_SCHEMA, example="pod-b")

_DROP = {
    "type": "object",
    "required": ["id", "signature", "flows", "connections", "first_seen", "last_seen", "nodes", "explanation"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{16}$", "description": "Stable id of the drop signature."},
        "signature": {"type": "object", "properties": {
            "source_workload": _STR, "destination": _STR, "port": {"type": "integer"}, "protocol": _STR,
            "direction": _STR, "policies": {"type": "array", "items": _STR},
            "traps": {"type": "array", "items": _STR}}},
        "workload": {"type": "string", "description": "namespace/workload the drop happened to (Deployment, "
                     "StatefulSet, DaemonSet, CronJob or the bare pod); empty for drops stored by an older version."},
        "first_pod": {"type": "string", "description": "The pod the drop was first seen on (its Event is there)."},
        "flows": {"type": "integer", "minimum": 0}, "connections": {"type": "integer", "minimum": 0},
        "first_seen": {"type": "string", "format": "date-time"}, "last_seen": {"type": "string", "format": "date-time"},
        "nodes": {"type": "array", "items": _STR},
        "reported_by": _STR,
        "window": {"type": "object", "description": "Counts inside since..until, when asked.",
                   "properties": {"flows": {"type": "integer"}, "connections": {"type": "integer"}}},
        "explanation": {"$ref": "#/components/schemas/Explanation"},
        "explanation_text": _STR,
        "samples": {"type": "array", "items": {"$ref": "#/components/schemas/Flow"}},
    },
}
_LIST = {"type": "object", "required": ["drops", "nodes_missing"], "properties": {
    "drops": {"type": "array", "items": {"$ref": "#/components/schemas/Drop"}},
    "nodes_missing": {"type": "array", "items": _STR, "description": "Instances that did not answer in time."},
    "fixes_for_all": {"type": "array", "items": {"type": "object"},
                      "description": "With two or more drops that have a fix: their fixes planned together on the "
                                     "current state, one change per object, checked against every drop they cover."},
    "fixes_for_all_drops": {"type": "array", "items": _STR, "description": "Ids of the drops fixes_for_all covers."}}}
_ERROR = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string", "minLength": 1, "description": "What was wrong, in words."},
    "candidates": {"type": "array", "items": _STR, "description": "With 409: the namespaces holding the name."}}}
ERRORS = {400: "Invalid input; the reason is given.", 404: "Not found (also: a path no route matches).",
          409: "Ambiguous pod name; candidates are listed.", 500: "Internal error; the daemon's log has the details.",
          502: "The instance holding the answer did not answer.",
          429: "Over the caller's rate (--api-rate, --api-burst); the Retry-After header says when to ask again.",
          504: "No answer within the request deadline (--api-deadline).",
          403: "The caller may not see what was asked (--auth kubernetes).",
          503: "Too many streams open; the Retry-After header says when to ask again."}
_TEXT = {"text/plain": {"schema": _STR}}


def _answers(schema: str, *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}, **_TEXT}}}
    for code in sorted({*codes, 400, 404, 429, 500, 504}):
        out[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    return out


def _get(summary: str, parameters: list[dict[str, Any]], schema: str, *codes: int) -> dict[str, Any]:
    return {"get": {"summary": summary, "description": PARAMETERS_NOTE, "parameters": parameters,
                    "responses": _answers(schema, *codes)}}


_STREAM_EVENT = {"type": "object", "required": ["event"], "description": "One line of /drops/stream.", "properties": {
    "event": {"type": "string", "enum": ["subscribed", "new", "drop", "heartbeat", "cut_off"]},
    "drop": {"type": "object", "description": "new: an entry of /drops (Drop); drop: its id, signature, pod, time "
             "and headline."},
    "following": _STR, "note": _STR, "reported_by": _STR,
    "filtered_to_namespaces": {"type": "array", "items": _STR},
    "reason": {"type": "string", "description": "cut_off: why the daemon ended the stream (too slow, open too "
               "long); the last line."}}}


def _stream() -> dict[str, Any]:
    """/drops/stream: JSON lines (one StreamEvent a line) or text lines; errors before it starts as elsewhere."""
    nsq = _param("namespace", "query", "Only drops of pods in this namespace.", NAMESPACE_SCHEMA)
    podq = _param("pod", "query", "Only drops of pods of this name.", NAME_SCHEMA)
    kept = [f for f in FILTERS if f["name"] in ("direction", "policy", "trap", "format")]
    every = _param("all", "query", "true: every explained drop too, not only new signatures.",
                   {"type": "string", "enum": ["true", "false"]})
    local = _param("scope", "query", "Only local: a stream follows one instance (cluster is refused with 400).",
                   {"type": "string", "enum": ["local"]})
    responses: dict[str, Any] = {"200": {
        "description": "A stream that does not end by itself: one event a line (subscribed first, then new, drop, "
                       "heartbeat every 15 s of silence, and cut_off with a reason when the daemon ends it). "
                       "since, until and limit are refused with 400: the stream starts now.",
        "content": {"application/x-ndjson": {"x-itemSchema": {"$ref": "#/components/schemas/StreamEvent"},
                                             "schema": _STR}, **_TEXT}}}
    for code in (400, 403, 404, 429, 500, 503, 504):
        responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    return {"get": {"summary": "Follow new drop signatures (and every drop) from now on, like hubble observe -f",
                    "description": PARAMETERS_NOTE, "parameters": [nsq, podq, *kept, every, local],
                    "responses": responses}}


def _probe(summary: str, ok: str, bad: str | None, *, rated: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": ok, "content": _TEXT}}
    if bad is not None:
        out["503"] = {"description": bad, "content": _TEXT}
    out |= {"404": {"$ref": "#/components/responses/E404"}, "500": {"$ref": "#/components/responses/E500"}}
    if rated:  # /healthz and /readyz are never rate-limited: the kubelet must always get an answer
        out |= {"429": {"$ref": "#/components/responses/E429"}, "504": {"$ref": "#/components/responses/E504"}}
    return {"get": {"summary": summary, "responses": out}}


def _embedded() -> dict[str, Any]:
    """The JSON Schemas of schemas/ as components, their references rewritten to point inside this document.

    A reference to https://drop-explainer.dev/... resolves nowhere (no such
    site is served), so nothing in the document may point outside it.
    """
    files = {"explanation.schema.json": "Explanation", "flow.schema.json": "Flow",
             "whatif-result.schema.json": "WhatIfResult"}
    out: dict[str, Any] = {}

    def rewrite(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            done = {k: rewrite(v, prefix) for k, v in node.items() if k not in ("$schema", "$id", "$defs")}
            if isinstance(ref, str):
                target, _, pointer = ref.rpartition("#") if "#" in ref else (ref, "", "")
                base = files[target.rsplit("/", 1)[-1]] if target else prefix
                name = pointer.removeprefix("/$defs/")
                done["$ref"] = f"#/components/schemas/{base}{'.' + name if name else ''}"
            return done
        if isinstance(node, list):
            return [rewrite(v, prefix) for v in node]
        return node

    for file, prefix in files.items():
        schema = json.loads((resources.files("drop_explainer") / "schemas" / file).read_text())
        out[prefix] = rewrite(schema, prefix)
        for name, sub in schema.get("$defs", {}).items():
            out[f"{prefix}.{name}"] = rewrite(sub, prefix)
    return out


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "drop-explainer", "version": __version__,
                 "description": "Why was this packet dropped? Explanations of NetworkPolicy drops. Every error "
                                "is {\"error\": reason} as JSON when JSON was asked (Accept: application/json or "
                                "?format=json), text otherwise."},
        "paths": {
            "/pods/{pod}/drops": _get("Drops of a pod found by name in one namespace", [
                POD, _param("namespace", "query", "Namespace, when the name exists in several.", NAMESPACE_SCHEMA),
                *FILTERS], "DropList", 409, 502),
            "/namespaces/{namespace}/pods/{pod}/drops": _get("Drops of one pod", [NS, POD, *FILTERS], "DropList",
                                                             502),
            "/namespaces/{namespace}/drops": _get("Drops of the pods of a namespace", [NS, *FILTERS], "DropList"),
            "/drops": _get("Drops in the cluster", FILTERS, "DropList"),
            "/drops/stream": _stream(),
            "/drops/{id}": _get("One drop with sample flows", [
                _param("id", "path", "Drop id.", {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                       example="0123456789abcdef"), FORMAT, SCOPE], "Drop"),
            "/policies/{namespace}/{name}/drops": _get("Drops decided by one policy", [
                NS, _param("name", "path", "Policy name.", NAME_SCHEMA, example="default-deny"),
                *[f for f in FILTERS if f["name"] != "policy"]], "DropList"),
            "/whatif": _get("Would this connection be allowed, and why", [
                _param("from", "query", "NAMESPACE/POD, a pod or node name unique in the state, node/NAME, or an "
                       "IP address.", WHATIF_END, True, example="frontend/pod-a"),
                _param("to", "query", "NAMESPACE/POD, svc/NAMESPACE/NAME (NAMESPACE/NAME of a Service when no such "
                       "pod), a unique name, or an IP address (a Service cluster IP is judged at each ready "
                       "backend).", WHATIF_END, True, example="backend/pod-b"),
                _param("port", "query", "Destination port: a number, or a port name of the destination pod or "
                       "Service (a Service port is translated to each backend's targetPort).",
                       PORT_SCHEMA, True, example="8080"),
                _param("protocol", "query", "TCP (default), UDP or SCTP, in any letter case.",
                       {"type": "string", "pattern": PROTOCOL_PATTERN}),
                FORMAT], "WhatIfResult.verdict", 409),
            "/healthz": _probe("Liveness: 503 when a watch, the flow source or the store is failing", "healthy",
                               "unhealthy; the reason is given"),
            "/readyz": _probe("Readiness: 503 until every kind of object has synced once", "ready", "syncing"),
            "/metrics": _probe("Prometheus metrics (text exposition format)", "the metrics", None, rated=True),
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}},
                "404": {"$ref": "#/components/responses/E404"}, "500": {"$ref": "#/components/responses/E500"}}}},
        },
        "components": {
            "schemas": {"Drop": _DROP, "DropList": _LIST, "StreamEvent": _STREAM_EVENT, "Error": _ERROR, **_embedded()},
            "responses": {f"E{code}": {"description": why, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}, **_TEXT}}
                for code, why in ERRORS.items()},
        },
    }
