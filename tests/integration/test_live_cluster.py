"""LiveState and the Events sink against a real kube-apiserver + etcd (tests/harness).

Run: python -m pytest -p tests.harness.fixtures tests/integration/test_live_cluster.py

The daemon runs as its own service account with only the RBAC it needs
(granted here, as deploy/ would), so a missing permission fails a test.
A partition is made with a loopback TCP relay the test can cut: the watch
loses its connection while objects change and etcd is compacted, which is
exactly how a real daemon ends up answered with 410 Gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from drop_explainer.cluster import kubeapi, live, watching
from drop_explainer.explain.explaining import explain_flow
from drop_explainer.flows.model import Direction, DropKind, Endpoint, EndpointKind, Flow, Verdict
from drop_explainer.flows.model import Protocol as L4
from drop_explainer.policy.engine import Engine
from drop_explainer.sinks import events
from drop_explainer.sinks.base import ExplainedDrop, signature_of
from tests.harness.apiserver import DAEMON_NAMESPACE, DAEMON_SERVICE_ACCOUNT, KubeApiServer
from tests.harness.kubelet import as_json, create_node, create_pod, ensure_namespace

pytestmark = pytest.mark.apiserver

P = ParamSpec("P")
T = TypeVar("T")
WATCH = watching.WatchSettings(timeout_s=30, backoff_initial_s=0.1, backoff_max_s=1.0)
LIVE = live.LiveSettings(watch=WATCH, min_interval_s=0.1)
ROLE = "drop-explainer-test"
NODES_ROLE = "drop-explainer-test-nodes"
READ = ["get", "list", "watch"]
RULES: dict[str, list[dict[str, Any]]] = {
    ROLE: [
        {"apiGroups": [""], "resources": ["namespaces", "pods", "services"], "verbs": READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        # As the shipped ClusterRole: where another test left Cilium's CRDs served, the live state watches them.
        {"apiGroups": ["cilium.io"], "resources": ["ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies"],
         "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "get"]},
    ],
    # Separate, so a test can take it away and give it back.
    NODES_ROLE: [{"apiGroups": [""], "resources": ["nodes"], "verbs": READ}],
}


@pytest.fixture(autouse=True)
def _collect_garbage_at_the_end() -> Iterator[None]:
    """A transport a test leaves open is reported by that test, not by whichever test the collector runs in.

    Transports and their protocols refer to each other, so an unclosed one
    is found only by a garbage-collection pass, at a moment that depends on
    everything allocated since; under load that was a later test.
    """
    yield
    gc.collect()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def off_loop(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """The kubernetes client blocks: keep it off the loop that runs the watches."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


def bind(api: ApiClient, role: str) -> None:
    """Grant one ClusterRole to the daemon's service account (idempotent)."""
    rbac = client.RbacAuthorizationV1Api(api)
    body: Any = {"metadata": {"name": role}, "rules": RULES[role]}
    binding: Any = {"metadata": {"name": role},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"kind": "ServiceAccount", "name": DAEMON_SERVICE_ACCOUNT,
                                  "namespace": DAEMON_NAMESPACE}]}
    for create in (lambda: rbac.create_cluster_role(body), lambda: rbac.create_cluster_role_binding(binding)):
        try:
            create()
        except ApiException as exc:
            if exc.status != 409:
                raise


def unbind(api: ApiClient, role: str) -> None:
    with contextlib.suppress(ApiException):
        client.RbacAuthorizationV1Api(api).delete_cluster_role_binding(role)


@contextlib.contextmanager
def admin_of(server: KubeApiServer) -> Iterator[ApiClient]:
    api = server.admin_api_client()
    try:
        for role in RULES:
            bind(api, role)
        yield api
    finally:
        KubeApiServer.close_api_client(api)


@pytest.fixture
def admin(kube_apiserver: KubeApiServer) -> Iterator[ApiClient]:
    """Admin client for the shared server; the daemon's RBAC is in place."""
    with admin_of(kube_apiserver) as api:
        yield api


class Relay:
    """A loopback TCP relay to the API server that the test can cut, as a network partition would.

    Every transport it opens is closed by ``cut()``, including a client
    whose upstream connection was still being opened when the cut came
    (it would otherwise outlive the partition), and ``close()`` returns only
    once the sockets are closed, so nothing is left for the garbage
    collector to find later as an "unclosed transport" in another test.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        writers, self._writers = self._writers, set()
        for writer in writers:
            writer.transport.abort()
        await asyncio.sleep(0)  # abort() closes the socket on the loop's next pass: let it

    async def close(self) -> None:
        await self.cut()
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.cut()  # whatever a cancelled task had opened meanwhile

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Known at once, so a cut while the upstream connection is being opened breaks this one too.
        # The work runs in a task of our own: close() may cancel it (asyncio logs a cancelled
        # client_connected_cb task as an error).
        self._writers.add(writer)
        self._spawn(self._connect(reader, writer))

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        if writer not in self._writers:  # cut meanwhile: the client is gone, so is this
            up_writer.transport.abort()
            return
        self._writers.add(up_writer)
        self._spawn(self._pump(reader, up_writer))
        self._spawn(self._pump(up_reader, writer))

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
        finally:  # also when cancelled: the far side must see the break
            dst.transport.abort()


async def test_the_partition_relay_leaves_no_connection_open_after_a_cut_or_close() -> None:
    """Clients caught mid-connect by cut() or close() do not outlive them (they used to, and leaked at loop end)."""
    open_upstream: set[asyncio.StreamWriter] = set()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_upstream.add(writer)
        try:
            while await reader.read(65536):
                pass
        finally:
            open_upstream.discard(writer)
            writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    relay = Relay(server.sockets[0].getsockname()[1])
    clients: list[asyncio.StreamWriter] = []
    try:
        for stop in (relay.cut, relay.close):
            await relay.start()
            for _ in range(5):
                clients.append((await asyncio.open_connection("127.0.0.1", relay.port))[1])
            await asyncio.sleep(0)  # the relay has accepted them and is connecting upstream
            await stop()
            await eventually(lambda: not open_upstream, timeout=5)
    finally:
        for client_writer in clients:
            client_writer.close()
            with contextlib.suppress(OSError):
                await client_writer.wait_closed()
        server.close()
        await server.wait_closed()


@dataclasses.dataclass
class Running:
    state: live.LiveState
    deleted: list[str]


@contextlib.asynccontextmanager
async def running_live_state(endpoint: kubeapi.Endpoint) -> AsyncIterator[Running]:
    deleted: list[str] = []
    async with kubeapi.Client(endpoint) as api:
        # Without Cilium's kinds: other tests on the shared API server install and delete their CRDs, and
        # these tests count and time the core kinds (test_policy_kinds_on_apiserver.py covers discovery).
        state = live.LiveState(api, settings=LIVE, on_pod_deleted=lambda pod: deleted.append(pod.key),
                               discover=False)
        task = asyncio.create_task(state.run())
        try:
            yield Running(state, deleted)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def daemon_endpoint(server: KubeApiServer) -> kubeapi.Endpoint:
    return kubeapi.load_endpoint(server.daemon_kubeconfig)


# ---- LiveState ---------------------------------------------------------------------------


def seed(api: ApiClient, ns: str, node: str) -> None:
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    ensure_namespace(core, ns, {"team": "a"})
    create_node(core, node, "192.0.2.50", ["10.250.0.0/24"])
    create_pod(core, ns, "web", node_name=node, pod_ip="10.250.0.5", host_ip="192.0.2.50", labels={"app": "web"})
    svc: Any = {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    core.create_namespaced_service(ns, svc)
    pol: Any = {"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    net.create_namespaced_network_policy(ns, pol)


def create_one_of_each(api: ApiClient, ns: str, node: str, other_ns: str, other_node: str) -> None:
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    ensure_namespace(core, other_ns)
    create_node(core, other_node, "192.0.2.51", ["10.250.1.0/24"])
    create_pod(core, ns, "db", node_name=node, pod_ip="10.250.0.6", host_ip="192.0.2.50")
    svc: Any = {"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}}
    core.create_namespaced_service(ns, svc)
    pol: Any = {"metadata": {"name": "allow"}, "spec": {"podSelector": {}, "ingress": [{}]}}
    net.create_namespaced_network_policy(ns, pol)


def update_one_of_each(api: ApiClient, ns: str, node: str) -> None:
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    core.patch_namespace(ns, {"metadata": {"labels": {"team": "b"}}})
    core.patch_node(node, {"metadata": {"labels": {"zone": "z"}}})
    core.patch_namespaced_pod("web", ns, {"metadata": {"labels": {"app": "web", "v": "2"}}})
    core.patch_namespaced_service("web", ns, {"spec": {"selector": {"app": "web", "v": "2"}}})
    net.patch_namespaced_network_policy("deny", ns, {"spec": {"policyTypes": ["Ingress", "Egress"]}})


def delete_one_of_each(api: ApiClient, ns: str, other_ns: str, other_node: str) -> None:
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    core.delete_namespaced_pod("db", ns, grace_period_seconds=0)
    core.delete_namespaced_service("db", ns)
    net.delete_namespaced_network_policy("allow", ns)
    core.delete_node(other_node)
    core.delete_namespace(other_ns)
    # No namespace controller here: finalize by hand, as it would once the namespace is empty.
    finalized: Any = {"metadata": {"name": other_ns}, "spec": {"finalizers": []}}
    core.replace_namespace_finalize(other_ns, finalized)


async def test_live_state_syncs_then_follows_create_update_delete_of_every_kind(
        kube_apiserver: KubeApiServer, admin: ApiClient) -> None:
    """After the initial list, changes to all five kinds reach the snapshot."""
    ns, node, other_ns, other_node = unique("live"), unique("node"), unique("live-b"), unique("node")
    await off_loop(seed, admin, ns, node)
    async with running_live_state(daemon_endpoint(kube_apiserver)) as run:
        await asyncio.wait_for(run.state.wait_ready(), 30)
        snap = run.state.snapshot
        assert snap().namespaces[ns].labels["team"] == "a"
        assert snap().pods[f"{ns}/web"].ips == ("10.250.0.5",)
        assert node in snap().nodes
        assert f"{ns}/web" in snap().services
        assert f"{ns}/deny" in snap().policies

        created_at = time.time()
        await off_loop(create_one_of_each, admin, ns, node, other_ns, other_node)
        await eventually(lambda: other_ns in snap().namespaces and other_node in snap().nodes
                         and f"{ns}/db" in snap().pods and f"{ns}/db" in snap().services
                         and f"{ns}/allow" in snap().policies)

        await off_loop(update_one_of_each, admin, ns, node)
        await eventually(lambda: snap().namespaces[ns].labels["team"] == "b"
                         and snap().nodes[node].labels.get("zone") == "z"
                         and snap().pods[f"{ns}/web"].labels.get("v") == "2"
                         and (snap().services[f"{ns}/web"].selector or {}).get("v") == "2"
                         and len(snap().policies[f"{ns}/deny"].policy_types) == 2)

        await off_loop(delete_one_of_each, admin, ns, other_ns, other_node)
        await eventually(lambda: f"{ns}/db" not in snap().pods and f"{ns}/db" not in snap().services
                         and f"{ns}/allow" not in snap().policies and other_node not in snap().nodes
                         and other_ns not in snap().namespaces)
        assert f"{ns}/db" in run.deleted
        changes = [(c.change, c.key) for c in run.state.policy_changes(created_at)]
        assert changes == [("ADDED", f"{ns}/allow"), ("MODIFIED", f"{ns}/deny"), ("DELETED", f"{ns}/allow")]
        assert run.state.healthy()


async def test_ready_only_after_every_kind_has_synced(kube_apiserver: KubeApiServer, admin: ApiClient) -> None:
    """Without RBAC on nodes every other kind syncs but the state is not ready; granting it makes it ready."""
    await off_loop(unbind, admin, NODES_ROLE)
    try:
        async with running_live_state(daemon_endpoint(kube_apiserver)) as run:
            await eventually(lambda: sum(run.state.synced.values()) == len(live.KINDS) - 1)
            await eventually(lambda: run.state.disconnected_since["Node"] is not None)
            assert not run.state.ready
            assert not run.state.synced["Node"]
            assert not run.state.snapshot().pods
            await off_loop(bind, admin, NODES_ROLE)
            await asyncio.wait_for(run.state.wait_ready(), 30)
            assert run.state.snapshot().nodes
    finally:
        await off_loop(bind, admin, NODES_ROLE)


def web_slice(name: str, ns: str, *, b_ready: bool) -> dict[str, Any]:
    """An EndpointSlice of Service web over pods a (ready) and b, as the EndpointSlice controller writes it."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
            "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.251.0.1"], "conditions": {"ready": True}},
                          {"addresses": ["10.251.0.2"], "conditions": {"ready": b_ready}}]}


async def test_compaction_during_a_partition_forces_410_and_the_relist_misses_nothing(
        kube_apiserver_without_watch_cache: KubeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    """Changes made while the watch was cut and then compacted away are all found by the relist.

    EndpointSlices included: one changed (a backend no longer ready) and one deleted in the gap.
    """
    caplog.set_level(logging.INFO, logger="drop_explainer.cluster.watching")
    server = kube_apiserver_without_watch_cache
    relay = Relay(server.port)
    await relay.start()
    with admin_of(server) as admin:
        core, net, discovery = client.CoreV1Api(admin), client.NetworkingV1Api(admin), client.DiscoveryV1Api(admin)
        ns, node = unique("gap"), unique("node")
        await off_loop(ensure_namespace, core, ns)
        await off_loop(create_node, core, node, "192.0.2.60", ["10.251.0.0/24"])
        for name, ip in (("a", "10.251.0.1"), ("b", "10.251.0.2")):
            await off_loop(create_pod, core, ns, name, node_name=node, pod_ip=ip, host_ip="192.0.2.60")
        for name, b_ready in (("web-1", True), ("web-2", True)):
            await off_loop(discovery.create_namespaced_endpoint_slice, ns, web_slice(name, ns, b_ready=b_ready))
        endpoint = dataclasses.replace(daemon_endpoint(server), base_url=f"https://127.0.0.1:{relay.port}")
        try:
            async with running_live_state(endpoint) as run:
                await asyncio.wait_for(run.state.wait_ready(), 30)
                await off_loop(core.patch_namespaced_pod, "a", ns, {"metadata": {"labels": {"seen": "live"}}})
                await eventually(lambda: run.state.snapshot().pods[f"{ns}/a"].labels.get("seen") == "live")

                await relay.cut()
                await eventually(lambda: run.state.disconnected_since["Pod"] is not None)
                gap_started = time.time()
                await off_loop(core.delete_namespaced_pod, "b", ns, grace_period_seconds=0)
                await off_loop(create_pod, core, ns, "c", node_name=node, pod_ip="10.251.0.3", host_ip="192.0.2.60")
                pol: Any = {"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}
                await off_loop(net.create_namespaced_network_policy, ns, pol)
                await off_loop(discovery.replace_namespaced_endpoint_slice, "web-1", ns,
                               web_slice("web-1", ns, b_ready=False))
                await off_loop(discovery.delete_namespaced_endpoint_slice, "web-2", ns)
                await off_loop(server.compact_etcd)
                await relay.start()

                def slice_ready() -> list[bool]:
                    found = run.state.snapshot().endpoint_slices.get(f"{ns}/web-1")
                    return [e.ready for e in found.endpoints] if found is not None else []

                await eventually(lambda: {f"{ns}/a", f"{ns}/c"} <= set(run.state.snapshot().pods)
                                 and f"{ns}/b" not in run.state.snapshot().pods
                                 and f"{ns}/deny" in run.state.snapshot().policies
                                 and slice_ready() == [True, False]
                                 and f"{ns}/web-2" not in run.state.snapshot().endpoint_slices)
                assert f"{ns}/b" in run.deleted
                for kind in ("Pod", "EndpointSlice"):
                    assert any(r.message == "watch_expired" and getattr(r, "kind", "") == kind
                               for r in caplog.records), kind
                assert [(c.change, c.key) for c in run.state.policy_changes(gap_started)] == [
                    ("ADDED", f"{ns}/deny")]
        finally:
            await relay.close()


async def test_apiserver_restart_under_a_running_live_state_reconnects_and_catches_up(
        kube_apiserver: KubeApiServer, admin: ApiClient, caplog: pytest.LogCaptureFixture) -> None:
    """The watches survive a restart of kube-apiserver and see the changes made after it."""
    caplog.set_level(logging.INFO, logger="drop_explainer.cluster.watching")
    core = client.CoreV1Api(admin)
    ns, node = unique("restart"), unique("node")
    await off_loop(ensure_namespace, core, ns)
    await off_loop(create_node, core, node, "192.0.2.70", ["10.252.0.0/24"])
    await off_loop(create_pod, core, ns, "a", node_name=node, pod_ip="10.252.0.1", host_ip="192.0.2.70")
    async with running_live_state(daemon_endpoint(kube_apiserver)) as run:
        await asyncio.wait_for(run.state.wait_ready(), 30)
        # On this thread, not off_loop: the harness gives kube-apiserver PR_SET_PDEATHSIG, which
        # fires when the *thread* that started it ends, and executor threads end with the test's loop.
        # The loop is frozen meanwhile; the watches find their connections dead when it resumes.
        kube_apiserver.restart_apiserver()
        fresh = kube_apiserver.admin_api_client()  # the restart cut the admin's connections too
        try:
            core = client.CoreV1Api(fresh)
            await off_loop(create_pod, core, ns, "b", node_name=node, pod_ip="10.252.0.2", host_ip="192.0.2.70")
            await off_loop(core.delete_namespaced_pod, "a", ns, grace_period_seconds=0)
        finally:
            KubeApiServer.close_api_client(fresh)
        await eventually(lambda: f"{ns}/b" in run.state.snapshot().pods and f"{ns}/a" not in run.state.snapshot().pods,
                         timeout=60)
        # A quiet kind (nothing changed since the restart) is known connected again at its next event,
        # bookmark or the server's end of the watch (WATCH.timeout_s): up to 30 s after it reconnected.
        await eventually(lambda: all(since is None for since in run.state.disconnected_since.values()), timeout=90)
        assert f"{ns}/a" in run.deleted
        assert run.state.healthy()
        # The restart is noticed either as a broken stream or, when an earlier test compacted etcd,
        # as an expired resourceVersion ending in a relist; both must be logged.
        assert {"watch_failed", "watch_expired"} & {r.message for r in caplog.records}


# ---- the Events sink ---------------------------------------------------------------------------


def find_events(api: ApiClient, ns: str, pod: str, uid: str) -> list[dict[str, Any]]:
    """The Events kubectl describe shows for the pod: selected by kind, name, namespace and uid."""
    selector = (f"involvedObject.kind=Pod,involvedObject.name={pod},involvedObject.namespace={ns},"
                f"involvedObject.uid={uid}")
    found = client.CoreV1Api(api).list_namespaced_event(ns, field_selector=selector)
    items: list[dict[str, Any]] = as_json(api, found)["items"]
    return items


async def test_events_sink_creates_then_updates_one_event_kubectl_describe_shows(
        kube_apiserver: KubeApiServer, admin: ApiClient) -> None:
    """A new drop makes one Warning Event on the pod; repeats raise its count, never a second Event."""
    core = client.CoreV1Api(admin)
    ns, node = unique("events"), unique("node")
    await off_loop(ensure_namespace, core, ns)
    await off_loop(create_node, core, node, "192.0.2.80", ["10.253.0.0/24"])
    await off_loop(create_pod, core, ns, "client", node_name=node, pod_ip="10.253.0.1", host_ip="192.0.2.80")
    web = await off_loop(create_pod, core, ns, "web", node_name=node, pod_ip="10.253.0.2", host_ip="192.0.2.80",
                         labels={"app": "web"})
    uid = as_json(admin, web)["metadata"]["uid"]
    pol: Any = {"metadata": {"name": "deny"}, "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}
    await off_loop(client.NetworkingV1Api(admin).create_namespaced_network_policy, ns, pol)

    endpoint = daemon_endpoint(kube_apiserver)
    state = await kubeapi.fetch_state(endpoint)
    flow = Flow(time.time_ns(), Verdict.DROPPED, Endpoint(EndpointKind.POD, "10.253.0.1", ns, "client"),
                Endpoint(EndpointKind.POD, "10.253.0.2", ns, "web"), L4.TCP, 40000, 8080,
                drop_kind=DropKind.POLICY_DENIED, direction=Direction.INGRESS)
    expl = explain_flow(Engine(state), flow)
    drop = ExplainedDrop(flow, expl, signature_of(flow, expl, state), new=True)
    assert drop.signature.policies == (f"{ns}/deny",)

    settings = events.EventSettings(instance=node, min_update_interval_s=0.5)
    async with kubeapi.Client(endpoint) as api:
        sink = events.EventSink(api, settings)
        task = asyncio.create_task(sink.run())
        try:
            sink.handle(drop)
            await eventually(lambda: sink.stats.created == 1)
            [event] = await off_loop(find_events, admin, ns, "web", uid)
            assert (event["reason"], event["type"], event["count"]) == ("NetworkPolicyDrop", "Warning", 1)
            assert event["message"] == expl.headline
            assert event["source"]["component"] == "drop-explainer"

            for _ in range(9):
                sink.handle(dataclasses.replace(drop, new=False))
            async with asyncio.timeout(20):
                while (found := await off_loop(find_events, admin, ns, "web", uid))[0]["count"] != 10:
                    await asyncio.sleep(0.1)
            assert len(found) == 1
            assert sink.stats.created == 1
            assert sink.stats.errors == 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
