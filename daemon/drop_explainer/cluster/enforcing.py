"""The daemon's side of enforcer detection: keep it current, export it, warn on new policies.

``EnforcerTracker`` re-reads the few objects detection needs every
``interval_s`` (DaemonSets and CRDs change rarely; a CNI migration is the
case this catches), publishes the result into the live cluster state (so
every explanation leads with "not enforced" where it applies), and exports
it: ``drop_explainer_policy_enforcer{enforcer,profile,certain}`` = 1 and
``drop_explainer_policies_not_enforced`` (NetworkPolicies that exist while
nothing enforces them; 0 elsewhere).

Where nothing enforces policy, each NetworkPolicy *created* while the
daemon runs gets one Warning Event, ``PolicyNotEnforced``, on the policy
itself (``kubectl describe networkpolicy`` shows it), so the mistake is seen
before anyone relies on the policy. The Event's name is derived from the
policy's name and creation time: every DaemonSet instance, and a restarted
one, writes the same name, and the API server's 409 makes it one Event.
Policies that existed before the daemon started are counted by the metric,
not announced (a thousand Events at start would be noise). Switch the
Events off with ``--not-enforced-events=false``.

A configured enforcer (``--policy-enforcer``) replaces detection; a flow
source of an enforcing CNI (Hubble means Cilium) outweighs an uncertain
"nothing found".
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry, Gauge

from drop_explainer.cluster import enforcer, inventory, kubeapi, watching
from drop_explainer.cluster.enforcer import Detection, NotEvaluated
from drop_explainer.cluster.live import PolicyChange
from drop_explainer.cluster.state import ClusterState

log = logging.getLogger(__name__)

REASON: Final = "PolicyNotEnforced"
COMPONENT: Final = "drop-explainer"
_MAX_NAME: Final = 253


class Publishes(Protocol):
    """The live state: where the detection goes, and where new policies are seen."""

    def snapshot(self) -> ClusterState: ...

    def set_enforcer(self, detection: Detection | None) -> None: ...

    def set_not_evaluated(self, objects: tuple[NotEvaluated, ...]) -> None: ...

    def policy_changes(self, since: float, *, policies: Collection[str] | None = None) -> tuple[PolicyChange, ...]:
        ...


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    configured: str = ""
    """An enforcer name (cilium, calico, antrea, none...) that replaces detection; empty = detect."""
    source: str = ""
    """The flow source in use (hubble, calico-goldmane, antrea...): evidence of its CNI."""
    events: bool = True
    """One Warning Event on each NetworkPolicy created while nothing enforces policy."""
    interval_s: float = 300.0
    """How often detection is repeated."""
    poll_s: float = 1.0
    """How often new policies are looked for."""
    instance: str = "drop-explainer"

    def validate(self) -> None:
        known = set(enforcer.PROFILE_OF)
        if self.configured and self.configured not in known:
            raise ValueError(f"policy-enforcer: unknown enforcer {self.configured!r} "
                             f"(expected one of {', '.join(sorted(known))})")


def configured_detection(name: str) -> Detection:
    return Detection(name, enforcer.PROFILE_OF[name], certain=True, evidence=("configured (--policy-enforcer)",))


def combine(found: Detection, source: str) -> Detection:
    """An uncertain 'nothing/unknown' gives way to a flow source of an enforcing CNI."""
    by_source = enforcer.from_flow_source(source)
    if by_source is None or found.certain or found.enforces is True:
        return found
    return by_source


@dataclass(slots=True)
class TrackerStats:
    detections: int = 0
    failures: int = 0
    events_created: int = 0
    events_existing: int = 0
    events_failed: int = 0
    warned: set[tuple[str, str]] = field(default_factory=set)
    """(policy key, creation time) already announced."""


class EnforcerTracker:
    """Keeps the detection current in the live state, exports it, and announces unenforced new policies."""

    def __init__(self, client: kubeapi.Client, live: Publishes, registry: CollectorRegistry,
                 settings: TrackerSettings, *, wall_clock: Callable[[], float] = time.time) -> None:
        settings.validate()
        self.settings = settings
        self.detection: Detection | None = None
        self.stats = TrackerStats()
        self._client = client
        self._live = live
        self._wall_clock = wall_clock
        self._since = wall_clock()
        self._enforcer = Gauge("drop_explainer_policy_enforcer",
                               "1 for the component found enforcing NetworkPolicy (enforcer=none: nothing does; "
                               "certain=false: detection is uncertain).", ["enforcer", "profile", "certain"],
                               registry=registry)
        self._unenforced = Gauge("drop_explainer_policies_not_enforced",
                                 "NetworkPolicies that exist while no component of the cluster enforces them.",
                                 registry=registry)
        self._unenforced.set_function(self._count_unenforced)

    def _count_unenforced(self) -> float:
        if self.detection is None or self.detection.enforces is not False:
            return 0.0
        return float(len(self._live.snapshot().policies))

    async def detect_once(self) -> Detection:
        if self.settings.configured:
            found = configured_detection(self.settings.configured)
        else:
            objects = await inventory.fetch_inventory(self._client)
            found = combine(enforcer.detect(objects), self.settings.source)
            self._live.set_not_evaluated(await inventory.fetch_not_evaluated(self._client, objects))
        self._publish(found)
        return found

    def _publish(self, found: Detection) -> None:
        self.stats.detections += 1
        if found != self.detection:
            log.info("policy_enforcer_detected", extra={"enforcer": found.enforcer, "profile": found.profile,
                                                        "certain": found.certain, "evidence": list(found.evidence)})
        self.detection = found
        self._enforcer.clear()
        self._enforcer.labels(found.enforcer, found.profile, str(found.certain).lower()).set(1)
        self._live.set_enforcer(found)

    def summary(self) -> str:
        """For /readyz."""
        return self.detection.summary() if self.detection is not None else "policy enforcer: not detected yet"

    async def run(self) -> None:
        """Detect now and every interval; announce new policies meanwhile. Errors are logged, never fatal."""
        next_detection = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() >= next_detection:
                try:
                    await self.detect_once()
                except kubeapi.KubeApiError as exc:
                    self.stats.failures += 1
                    log.warning("policy_enforcer_detection_failed", extra={"status": exc.status,
                                                                           "detail": exc.message})
                next_detection = loop.time() + self.settings.interval_s
            if self.settings.events and self.detection is not None and self.detection.enforces is False:
                await self.announce_new_policies()
            await asyncio.sleep(self.settings.poll_s)

    async def announce_new_policies(self) -> None:
        """One Event per NetworkPolicy created since the daemon started, while nothing enforces policy."""
        changes = self._live.policy_changes(self._since)
        if changes:
            self._since = max(c.time for c in changes)
        policies = self._live.snapshot().policies
        for change in changes:
            if change.change is not watching.EventType.ADDED:
                continue
            pol = policies.get(change.key)
            if pol is None:
                continue
            mark = (pol.key, pol.creation_timestamp or "")
            if mark in self.stats.warned:
                continue
            self.stats.warned.add(mark)
            await self._create_event(pol.namespace, pol.name, pol.creation_timestamp or "")

    async def _create_event(self, namespace: str, name: str, created: str) -> None:
        detection = self.detection
        assert detection is not None
        note = detection.not_enforced_note() or ""
        message = (note.replace(": this connection is not blocked by policy.", ": ")
                   + f"this NetworkPolicy {namespace}/{name} has no effect on traffic. "
                   + f"Detected: {detection.summary()}.")
        try:
            # kubectl describe finds a policy's Events by its uid.
            pol = await self._client.request("GET", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/"
                                                    f"networkpolicies/{name}")
            uid = str((pol.get("metadata") or {}).get("uid") or "")
            body = self._event(namespace, name, created, message, uid)
            await self._client.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
        except kubeapi.KubeApiError as exc:
            if exc.status == 409:
                self.stats.events_existing += 1  # another instance (or we, before a restart) made it
                return
            self.stats.events_failed += 1
            log.warning("policy_event_failed", extra={"policy": f"{namespace}/{name}", "status": exc.status,
                                                      "detail": exc.message})
            return
        self.stats.events_created += 1
        log.info("policy_not_enforced_event", extra={"policy": f"{namespace}/{name}"})

    def _event(self, namespace: str, name: str, created: str, message: str, uid: str) -> dict[str, Any]:
        digest = hashlib.sha256(f"{namespace}/{name}@{created}".encode()).hexdigest()[:12]
        event_name = f"{name[:_MAX_NAME - 30]}.not-enforced.{digest}"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._wall_clock()))
        return {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": event_name, "namespace": namespace},
            "involvedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "name": name,
                               "namespace": namespace} | ({"uid": uid} if uid else {}),
            "reason": REASON, "message": message[:1024], "type": "Warning",
            "source": {"component": COMPONENT, "host": self.settings.instance},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": COMPONENT, "reportingInstance": self.settings.instance[:128],
        }
