"""The OpenAPI 3.1 description served at /openapi.json.

Kept beside the routes and checked by a test that every route is described
and every described parameter is accepted, so clients can rely on it.
"""

from __future__ import annotations

from typing import Any

from drop_explainer import __version__
from drop_explainer.api.params import DEFAULT_LIMIT, MAX_LIMIT
from drop_explainer.explain.traps import TITLES


def _param(name: str, where: str, description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "required": required or where == "path",
            "schema": schema}


_STR = {"type": "string"}
FORMAT = _param("format", "query", "json or text (default: text, or JSON when Accept: application/json).",
                {"enum": ["json", "text"]})
SCOPE = _param("scope", "query", "local: only this instance's drops; cluster (default): ask the instance "
               "holding them, or all instances.", {"enum": ["local", "cluster"]})
FILTERS = [
    _param("since", "query", "RFC 3339 time, epoch seconds, or a duration ago (30s, 15m, 2h, 7d).", _STR),
    _param("until", "query", "Same forms as since.", _STR),
    _param("direction", "query", "Only drops in this direction.", {"enum": ["ingress", "egress"]}),
    _param("policy", "query", "Only drops decided by this policy, NAMESPACE/NAME.", _STR),
    _param("trap", "query", "Only drops showing this trap.", {"enum": sorted(TITLES)}),
    _param("limit", "query", f"At most this many kinds of drop (default {DEFAULT_LIMIT}).",
           {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    FORMAT, SCOPE,
]
NS = _param("namespace", "path", "Namespace.", _STR)
POD = _param("pod", "path", "Pod name.", _STR)

_DROP = {
    "type": "object",
    "required": ["id", "signature", "flows", "connections", "first_seen", "last_seen", "nodes", "explanation"],
    "properties": {
        "id": {"type": "string", "description": "Stable id of the drop signature."},
        "signature": {"type": "object", "properties": {
            "source_workload": _STR, "destination": _STR, "port": {"type": "integer"}, "protocol": _STR,
            "direction": _STR, "policies": {"type": "array", "items": _STR},
            "traps": {"type": "array", "items": _STR}}},
        "workload": {"type": "string", "description": "namespace/workload the drop happened to (Deployment, "
                     "StatefulSet, DaemonSet, CronJob or the bare pod); empty for drops stored by an older version."},
        "first_pod": {"type": "string", "description": "The pod the drop was first seen on (its Event is there)."},
        "flows": {"type": "integer"}, "connections": {"type": "integer"},
        "first_seen": {"type": "string", "format": "date-time"}, "last_seen": {"type": "string", "format": "date-time"},
        "nodes": {"type": "array", "items": _STR},
        "reported_by": _STR,
        "window": {"type": "object", "description": "Counts inside since..until, when asked."},
        "explanation": {"$ref": "https://drop-explainer.dev/schemas/explanation.schema.json"},
        "explanation_text": _STR,
        "samples": {"type": "array", "items": {"$ref": "https://drop-explainer.dev/schemas/flow.schema.json"}},
    },
}
_LIST = {"type": "object", "required": ["drops", "nodes_missing"], "properties": {
    "drops": {"type": "array", "items": {"$ref": "#/components/schemas/Drop"}},
    "nodes_missing": {"type": "array", "items": _STR, "description": "Instances that did not answer in time."}}}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": _STR, "candidates": {"type": "array"}}}


def _answers(schema: str, *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
        "text/plain": {"schema": _STR}}}}
    for code in codes:
        out[str(code)] = {"description": {400: "Invalid input; the reason is given.", 404: "Not found.",
                                          409: "Ambiguous pod name; candidates are listed.",
                                          502: "The instance holding the answer did not answer."}[code],
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return out


def _get(summary: str, parameters: list[dict[str, Any]], schema: str, *codes: int) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": parameters, "responses": _answers(schema, *codes)}}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "drop-explainer", "version": __version__,
                 "description": "Why was this packet dropped? Explanations of NetworkPolicy drops."},
        "paths": {
            "/pods/{pod}/drops": _get("Drops of a pod found by name in one namespace", [
                POD, _param("namespace", "query", "Namespace, when the name exists in several.", _STR), *FILTERS],
                "DropList", 400, 404, 409, 502),
            "/namespaces/{namespace}/pods/{pod}/drops": _get("Drops of one pod", [NS, POD, *FILTERS], "DropList",
                                                             400, 502),
            "/namespaces/{namespace}/drops": _get("Drops of the pods of a namespace", [NS, *FILTERS], "DropList", 400),
            "/drops": _get("Drops in the cluster", FILTERS, "DropList", 400),
            "/drops/{id}": _get("One drop with sample flows", [_param("id", "path", "Drop id.", _STR), FORMAT, SCOPE],
                                "Drop", 400, 404),
            "/policies/{namespace}/{name}/drops": _get("Drops decided by one policy", [
                NS, _param("name", "path", "Policy name.", _STR), *[f for f in FILTERS if f["name"] != "policy"]],
                "DropList", 400),
            "/whatif": _get("Would this connection be allowed, and why", [
                _param("from", "query", "NAMESPACE/POD or an IP address.", _STR, True),
                _param("to", "query", "NAMESPACE/POD or an IP address.", _STR, True),
                _param("port", "query", "Destination port (the pod's port).", {"type": "integer"}, True),
                _param("protocol", "query", "TCP (default), UDP or SCTP.", {"enum": ["TCP", "UDP", "SCTP"]}),
                FORMAT], "WhatIf", 400),
            "/healthz": {"get": {"summary": "Liveness: 503 when a watch or the flow source is stalled",
                                 "responses": {"200": {"description": "healthy"}, "503": {"description": "stalled"}}}},
            "/readyz": {"get": {"summary": "Readiness: 503 until every kind of object has synced once",
                                "responses": {"200": {"description": "ready"}, "503": {"description": "syncing"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text exposition format"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
        },
        "components": {"schemas": {
            "Drop": _DROP, "DropList": _LIST, "Error": _ERROR,
            "WhatIf": {"type": "object", "required": ["allowed", "ingress", "egress", "explanation"]},
        }},
    }
