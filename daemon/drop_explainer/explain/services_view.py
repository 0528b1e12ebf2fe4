"""A Service answer's per-backend summary, as text and as JSON.

Kept apart from rendering.py so the Service section reads the same in
what-if answers, explained flows and stored drops.
"""

from __future__ import annotations

from typing import Any

from drop_explainer.explain.model import ServiceView


def view_json(v: ServiceView) -> dict[str, Any]:
    return {
        "service": v.service, "port": v.port, "protocol": v.protocol, "target_port": v.target,
        "backends_from": v.source_of_backends, "allowed_backends": v.allowed_count, "total_backends": len(v.backends),
        "not_ready_endpoints": v.not_ready,
        "backends": [{"pod": b.pod, "ip": b.ip, "port": b.port, "allowed": b.allowed, "why": b.why}
                     for b in v.backends],
    }


def view_text(v: ServiceView) -> list[str]:
    n = len(v.backends)
    lines = [f"Service {v.service} {v.protocol}/{v.port} -> targetPort {v.target}: allowed to {v.allowed_count} of "
             f"{n} backend(s) (backends from {v.source_of_backends}; policies see each backend's address and port)"
             + (f"; {v.not_ready} not-ready endpoint(s) not judged" if v.not_ready else "")]
    for b in v.backends:
        where = f"{b.ip}:{b.port}" if b.ip else f"port {b.port}"
        lines.append(f"  {'ALLOWED' if b.allowed else 'DENIED '} {b.pod} ({where}): {b.why}")
    return [*lines, ""]
