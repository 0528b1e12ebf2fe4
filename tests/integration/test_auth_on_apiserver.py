"""Who may ask the API, decided by the real kube-apiserver: TokenReview, SubjectAccessReview, impersonation.

Three service accounts with real tokens (TokenRequest): a cluster reader
(ClusterRoleBinding to deploy/'s drop-explainer-reader and -metrics-reader),
a team bound only in namespace ``frontend`` (a RoleBinding to the same
ClusterRole), and one bound to nothing. The daemon runs with --auth kubernetes
under its own identity, granted exactly deploy/base/rbac.yaml's ClusterRole.
The drops are the bundled incident's: frontend/pod-a -> backend/pod-b (two
namespaces) and the kubelet's probe -> backend/pod-b (backend only).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from drop_explainer import app, demo
from drop_explainer.cluster.loading import load_state
from drop_explainer.pipeline import StaticState
from tests.daemon_support import eventually, run_settings, running
from tests.harness import kubelet
from tests.harness.apiserver import DAEMON_NAMESPACE, KubeApiServer
from tests.integration.test_api_tls import Pki
from tests.tls_support import make_cert, make_key, pem_key

pytestmark = pytest.mark.apiserver

REPO = Path(__file__).resolve().parents[2]
INCIDENT = demo.incident_dir()
FLOWS = INCIDENT / "hubble-flows.jsonl"
# Signatures name workloads (pod-b's is its ReplicaSet, as the incident's pod carries no pod-template-hash).
CROSS = ("frontend/pod-a", "backend/backend-7d4b9c")
PROBE = ("172.18.0.12", "backend/backend-7d4b9c")


def _shipped_rbac() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((REPO / "deploy/base/rbac.yaml").read_text()))


def _apply_cluster_rbac(api: ApiClient) -> None:
    """deploy/base/rbac.yaml as shipped: the daemon's ClusterRole and binding, and the two reader roles."""
    rbac = client.RbacAuthorizationV1Api(api)
    for doc in _shipped_rbac():
        create, replace = {"ClusterRole": (rbac.create_cluster_role, rbac.replace_cluster_role),
                           "ClusterRoleBinding": (rbac.create_cluster_role_binding,
                                                  rbac.replace_cluster_role_binding)}[doc["kind"]]
        try:
            create(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
            replace(doc["metadata"]["name"], doc)


def _token(core: client.CoreV1Api, namespace: str, name: str, audiences: list[str] | None = None) -> str:
    kubelet.ensure_service_account(core, namespace, name)
    req = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=audiences or [],
                                                                            expiration_seconds=3600))
    return str(core.create_namespaced_service_account_token(name, namespace, req).status.token)


class Callers:
    def __init__(self, api: ApiClient, tag: str) -> None:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        self.rbac, self.tag = rbac, tag
        for ns in (DAEMON_NAMESPACE, "frontend", "backend"):
            kubelet.ensure_namespace(core, ns)
        self.reader_name, self.team_name = f"reader-{tag}", f"team-{tag}"
        self.reader = _token(core, DAEMON_NAMESPACE, self.reader_name)
        self.team = _token(core, "frontend", self.team_name)
        self.nobody = _token(core, DAEMON_NAMESPACE, f"nobody-{tag}")
        for role in ("drop-explainer-reader", "drop-explainer-metrics-reader"):
            rbac.create_cluster_role_binding({
                "metadata": {"name": f"{role}-{tag}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": self.reader_name, "namespace": DAEMON_NAMESPACE}]})
        self.core = core
        self.bind_team(self.team_name)

    def bind_team(self, account: str) -> str:
        """A RoleBinding in frontend only, of deploy/'s drop-explainer-reader, to ``account``; returns its name."""
        name = f"frontend-drops-{account}"
        self.rbac.create_namespaced_role_binding("frontend", {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "drop-explainer-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "frontend"}]})
        return name

    def remove(self) -> None:
        """Take back every grant made here: other tests expect the daemon's identity to have none."""
        for role in ("drop-explainer-reader", "drop-explainer-metrics-reader"):
            with contextlib.suppress(ApiException):
                self.rbac.delete_cluster_role_binding(f"{role}-{self.tag}")
        for doc in _shipped_rbac():
            delete = {"ClusterRole": self.rbac.delete_cluster_role,
                      "ClusterRoleBinding": self.rbac.delete_cluster_role_binding}[doc["kind"]]
            with contextlib.suppress(ApiException):
                delete(doc["metadata"]["name"])

    def new_team(self) -> tuple[str, str]:
        """Another frontend-only account: (its token, its RoleBinding's name)."""
        account = f"team-{uuid.uuid4().hex[:6]}"
        return _token(self.core, "frontend", account), self.bind_team(account)


@pytest.fixture(scope="module")
def callers(kube_apiserver: KubeApiServer) -> Iterator[Callers]:
    api = kube_apiserver.admin_api_client()
    try:
        _apply_cluster_rbac(api)
        made = Callers(api, uuid.uuid4().hex[:6])
        try:
            yield made
        finally:
            made.remove()
    finally:
        kube_apiserver.close_api_client(api)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flows(tmp: Path, keep: tuple[str, ...]) -> Path:
    """The incident's recorded flows whose source address is one of ``keep``."""
    path = tmp / f"flows-{len(keep)}-{uuid.uuid4().hex[:4]}.jsonl"
    lines = [line for line in FLOWS.read_text().splitlines()
             if any(f'"source":"{ip}"' in line for ip in keep)]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.asynccontextmanager
async def daemon(server: KubeApiServer, flows: Path, *argv: str) -> AsyncIterator[app.Daemon]:
    settings = run_settings("--auth", "kubernetes", "--kubeconfig", str(server.daemon_kubeconfig),
                            "--source", "replay", "--replay-file", str(flows), "--store-path", ":memory:", *argv)
    async with running(settings, StaticState(load_state(INCIDENT))) as d:
        yield d


async def ask(port: int, path: str, token: str | None = None, **headers: str) -> tuple[int, Any]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    sep = "&" if "?" in path else "?"
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}{sep}format=json",
                                                   headers=headers) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except json.JSONDecodeError:  # /metrics, or a refusal by something other than us
            return r.status, text


async def all_drops(port: int, token: str, want: int) -> list[dict[str, Any]]:
    """The cluster's drops as the caller sees them, once the replay has recorded ``want`` of them."""
    async def enough() -> list[dict[str, Any]] | None:
        status, body = await ask(port, "/drops", token)
        assert status == 200, body
        return body["drops"] if len(body["drops"]) >= want else None
    found = await eventually(enough, timeout=60)
    assert found, "the replayed drops were not recorded in time"
    return list(found)


def ends(d: dict[str, Any]) -> tuple[str, str]:
    return d["signature"]["source_workload"], d["signature"]["destination"]


def reviews(metrics_text: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == "drop_explainer_auth_reviews_total":
                out[(s.labels["review"], s.labels["result"], s.labels["cache"])] = s.value
    return out


@pytest.fixture
def flows_all(tmp_path: Path) -> Path:
    return _flows(tmp_path, ("10.244.1.10", "172.18.0.12"))


async def test_reader_team_and_nobody_see_everything_their_namespace_and_nothing(
        kube_apiserver: KubeApiServer, callers: Callers, flows_all: Path) -> None:
    """Cluster reader: both drops in full; frontend team: only the cross-namespace one, backend withheld; none: 403."""
    async with daemon(kube_apiserver, flows_all, "--auth-cache-ttl", "300") as d:
        everything = await all_drops(d.port, callers.reader, 2)
        assert sorted(ends(x) for x in everything) == sorted([CROSS, PROBE])
        assert all("withheld" not in x["explanation"] for x in everything)
        full = next(x for x in everything if ends(x) == CROSS)
        assert full["signature"]["policies"] == ["backend/default-deny"]
        assert full["explanation"]["fixes"]

        status, team = await ask(d.port, "/drops", callers.team)
        assert status == 200, team
        assert [ends(x) for x in team["drops"]] == [CROSS], "the backend-only drop is not the team's"
        assert team["filtered_to_namespaces"] == ["frontend"], "a filtered list says so"
        mine = team["drops"][0]
        assert mine["signature"]["policies"] == [], "backend's policy is backend's business"
        expl = mine["explanation"]
        assert expl["withheld"]["namespaces"] == ["backend"]
        assert expl["fixes"] == []
        assert expl["denying"] == []
        assert "flow" not in expl
        assert expl["connection"]["destination"] == {"kind": "pod", "namespace": "backend", "pod": "pod-b"}
        assert "10.244.2.20" not in str(mine), "no backend address leaks"
        assert "default-deny" not in str(mine), "no backend policy leaks"
        assert expl["ingress"] == {"allowed": False, "isolated": True, "withheld": True}

        status, body = await ask(d.port, "/namespaces/backend/drops", callers.team)
        assert status == 403, body
        for path in ("/policies/backend/default-deny/drops", "/drops?policy=backend/default-deny"):
            status, body = await ask(d.port, path, callers.team)
            assert status == 403, (path, body)  # no oracle of which drops backend's policy decides
            status, body = await ask(d.port, path, callers.reader)
            assert status == 200, (path, body)
            assert len(body["drops"]) == 2
        status, body = await ask(d.port, "/namespaces/frontend/drops", callers.team)
        assert status == 200
        assert body["drops"] == [], "frontend's own pods had no drops"
        status, body = await ask(d.port, f"/drops/{full['id']}", callers.team)
        assert status == 200
        assert body["explanation"]["withheld"]["namespaces"] == ["backend"]
        probe = next(x for x in everything if ends(x) == PROBE)
        status, body = await ask(d.port, f"/drops/{probe['id']}", callers.team)
        assert status == 404, "a drop the team may not see is not even said to exist"

        status, w = await ask(d.port, "/whatif?from=frontend/pod-a&to=backend/pod-b&port=8080", callers.team)
        assert status == 200, w
        assert w["allowed"] is False
        assert w["withheld"]["namespaces"] == ["backend"]
        assert w["ingress"]["withheld"]
        assert "policies" not in w["ingress"]
        status, w = await ask(d.port, "/whatif?from=frontend/pod-a&to=backend/pod-b&port=8080", callers.reader)
        assert status == 200
        assert [p["name"] for p in w["ingress"]["policies"]] == ["default-deny"]
        status, w = await ask(d.port, "/whatif?from=kube-system/coredns-5d78c9869d-x7k2p&to=backend/pod-b&port=8080",
                              callers.team)
        assert status == 403, w

        for path in ("/drops", "/namespaces/frontend/drops", "/whatif?from=frontend/pod-a&to=backend/pod-b&port=80"):
            status, body = await ask(d.port, path, callers.nobody)
            assert status == 403, (path, body)
            status, body = await ask(d.port, path)
            assert status == 401, (path, body)
            status, body = await ask(d.port, path, "not-a-token")
            assert status == 401, (path, body)

        for token in (callers.team, callers.nobody, None):
            status, _ = await ask(d.port, "/metrics", token)
            assert status == (401 if token is None else 403)
        for path in ("/healthz", "/readyz"):
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{d.port}{path}") as r:
                assert r.status == 200, "probes stay open: the kubelet has no token"

        async with aiohttp.ClientSession() as s, s.get(
                f"http://127.0.0.1:{d.port}/metrics", headers={"Authorization": f"Bearer {callers.reader}"}) as r:
            assert r.status == 200
            counted = reviews(await r.text())
        # The same tokens and questions came again and again: answered from the cache, and counted.
        assert counted[("token", "authenticated", "hit")] > 0
        assert counted[("token", "authenticated", "miss")] >= 3  # reader, team, nobody: one review each
        assert counted[("token", "rejected", "miss")] >= 1
        assert counted[("access", "allowed", "hit")] > 0
        assert counted[("access", "denied", "miss")] > 0


async def test_a_revoked_binding_takes_effect_after_the_cache_time(
        kube_apiserver: KubeApiServer, callers: Callers, flows_all: Path) -> None:
    """Deleting the team's RoleBinding: its requests turn 403 once the cached answer expires (TTL 1 s)."""
    token, binding = callers.new_team()
    async with daemon(kube_apiserver, flows_all, "--auth-cache-ttl", "1") as d:

        async def granted() -> bool:  # RBAC's informer sees a new binding a moment after its creation
            status, _ = await ask(d.port, "/namespaces/frontend/drops", token)
            return status == 200
        assert await eventually(granted, timeout=60)
        callers.rbac.delete_namespaced_role_binding(binding, "frontend")

        async def revoked() -> bool:
            status, _ = await ask(d.port, "/namespaces/frontend/drops", token)
            return status == 403
        # Bounded: RBAC's own informer plus our TTL, on a loaded machine.
        assert await eventually(revoked, timeout=60), "the revoked binding never took effect"
        status, _body = await ask(d.port, "/drops", callers.reader)
        assert status == 200, "the reader is untouched"


async def test_a_token_for_another_audience_is_refused(
        kube_apiserver: KubeApiServer, callers: Callers, flows_all: Path) -> None:
    """--auth-audiences drop-explainer: the API server's own audience is not enough, a token made for us is."""
    ours = _token(callers.core, DAEMON_NAMESPACE, callers.reader_name, ["drop-explainer"])
    async with daemon(kube_apiserver, flows_all, "--auth-audiences", "drop-explainer") as d:
        status, body = await ask(d.port, "/drops", callers.reader)
        assert status == 401, body
        status, body = await ask(d.port, "/drops", ours)
        assert status == 200, body


@contextlib.contextmanager
def two_nodes(tmp: Path) -> Iterator[tuple[int, int, Path, Path]]:
    """Ports and flows of node-1 (the cross-namespace drop) and node-2 (both drops)."""
    yield free_port(), free_port(), _flows(tmp, ("10.244.1.10",)), _flows(tmp, ("10.244.1.10", "172.18.0.12"))


async def test_fan_out_answers_a_team_only_its_namespaces_from_both_peers(
        kube_apiserver: KubeApiServer, callers: Callers, tmp_path: Path) -> None:
    """Two instances: a cluster-wide question by the team gets frontend's drops from both, backend's from neither."""
    with two_nodes(tmp_path) as (port1, port2, flows1, flows2):
        common = ("--mode", "daemonset", "--auth-cache-ttl", "300")
        async with daemon(kube_apiserver, flows1, *common, "--node-name", "node-1", "--port", str(port1),
                          "--peers", f"node-2=http://127.0.0.1:{port2}") as one, \
                daemon(kube_apiserver, flows2, *common, "--node-name", "node-2", "--port", str(port2),
                       "--peers", f"node-1=http://127.0.0.1:{port1}"):
            everything = await all_drops(one.port, callers.reader, 3)
            assert sorted((ends(x), x["reported_by"]) for x in everything) == sorted(
                [(CROSS, "node-1"), (CROSS, "node-2"), (PROBE, "node-2")])

            status, team = await ask(one.port, "/drops", callers.team)
            assert status == 200, team
            assert team["nodes_missing"] == [], "node-2 accepted the impersonated question"
            assert sorted((ends(x), x["reported_by"]) for x in team["drops"]) == [(CROSS, "node-1"),
                                                                                  (CROSS, "node-2")]
            assert all(x["explanation"]["withheld"]["namespaces"] == ["backend"] for x in team["drops"])

            # A client that is not the daemon cannot claim to be someone else.
            reader_user = f"system:serviceaccount:{DAEMON_NAMESPACE}:{callers.reader_name}"
            for token in (callers.team, callers.reader):
                status, body = await ask(port2, "/drops?scope=local", token, **{"Impersonate-User": reader_user})
                assert status == 403, body
                assert "Impersonate" in body["error"]
            status, body = await ask(port2, "/drops?scope=local", callers.team,
                                     **{"Impersonate-Group": "system:masters"})
            assert status in (400, 403), body
            # The daemon's own identity may, and the answer is the impersonated caller's.
            status, body = await ask(port2, "/drops?scope=local", kube_apiserver.daemon_token,
                                     **{"Impersonate-User": f"system:serviceaccount:frontend:{callers.team_name}",
                                        "Impersonate-Group": "system:serviceaccounts"})
            assert status == 200
            assert [ends(x) for x in body["drops"]] == [CROSS]


async def test_a_client_certificate_authenticates_and_is_authorized_like_a_token(
        kube_apiserver: KubeApiServer, callers: Callers, flows_all: Path, tmp_path: Path) -> None:
    """Over TLS with --tls-client-ca: a certificate naming the frontend team's account sees what its token sees;
    one naming nobody gets 403; neither certificate nor token: 401; a certificate of another CA: no handshake."""
    pki = Pki(tmp_path)
    pki.install(pki.issue("drop-explainer.test"))

    def with_cert(cn: str, ca: tuple[str, Any] | None = None) -> ssl.SSLContext:
        key = make_key()
        (tmp_path / f"{cn}.crt").write_bytes(make_cert(cn, key, ca or ("Test API CA", pki.ca_key), client=True))
        (tmp_path / f"{cn}.key").write_bytes(pem_key(key))
        ctx = pki.client_context()
        ctx.load_cert_chain(str(tmp_path / f"{cn}.crt"), str(tmp_path / f"{cn}.key"))
        return ctx

    async def over_tls(port: int, path: str, ctx: ssl.SSLContext, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (aiohttp.ClientSession() as s,
                    s.get(f"https://127.0.0.1:{port}{path}?format=json", ssl=ctx, headers=headers) as r):
            return r.status, await r.json()

    team_user = f"system:serviceaccount:frontend:{callers.team_name}"
    async with daemon(kube_apiserver, flows_all, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
                      "--tls-client-ca", str(pki.ca_file)) as d:
        assert d.port is not None
        team_ctx = with_cert(team_user)

        async def team_sees() -> Any:
            status, body = await over_tls(d.port, "/drops", team_ctx)
            assert status == 200, body
            return body if body["drops"] else None

        body = await eventually(team_sees, timeout=60)
        assert body, "the replayed drops were not recorded in time"
        assert [ends(x) for x in body["drops"]] == [CROSS]
        assert body["filtered_to_namespaces"] == ["frontend"]
        assert body["drops"][0]["explanation"]["withheld"]["namespaces"] == ["backend"]
        status, _ = await over_tls(d.port, "/namespaces/backend/drops", team_ctx)
        assert status == 403

        status, refused = await over_tls(d.port, "/drops", with_cert("someone-bound-to-nothing"))
        assert status == 403, refused
        status, refused = await over_tls(d.port, "/drops", pki.client_context())
        assert status == 401, refused
        assert "or a client certificate" in refused["error"]
        # A token still works over TLS, and wins over a certificate when both are sent.
        status, full = await over_tls(d.port, "/drops", team_ctx, callers.reader)
        assert status == 200, full
        assert "filtered_to_namespaces" not in full

        other_key = make_key()
        with pytest.raises((ssl.SSLError, aiohttp.ClientError)):
            await over_tls(d.port, "/drops", with_cert("forged", ("Other CA", other_key)))


async def test_the_rate_is_per_authenticated_user(
        kube_apiserver: KubeApiServer, callers: Callers, flows_all: Path) -> None:
    """Two users from the same address have their own buckets: one over the rate gets 429, the other is served."""
    async with daemon(kube_apiserver, flows_all, "--api-rate", "0.001", "--api-burst", "1") as d:
        assert d.port is not None
        assert (await ask(d.port, "/namespaces/frontend/drops", callers.team))[0] == 200
        status, body = await ask(d.port, "/namespaces/frontend/drops", callers.team)
        assert status == 429, body
        assert "over the rate" in body["error"]
        assert (await ask(d.port, "/namespaces/frontend/drops", callers.reader))[0] == 200
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{d.port}/healthz") as r:
            assert r.status == 200
