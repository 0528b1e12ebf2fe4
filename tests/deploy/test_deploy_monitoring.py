"""The monitoring path end to end, on loopback: demo daemon -> Prometheus -> Alertmanager -> a webhook.

`drop-explainer demo` serves the bundled incident's recorded Hubble drops
through an in-process Hubble server and explains them. A real Prometheus
(Debian's) scrapes it every second and evaluates deploy/prometheus's rules
unchanged; a real Alertmanager delivers to a webhook in this test. Checked:
every dashboard query and variable returns data, the new-drop alert fires
and arrives with the pod and policy labels and the curl command. Every
process is stopped at the end, also on failure.
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import deploy_support
import pytest
import sync_generated
import yaml
from deploy_support import Tools

pytestmark = pytest.mark.timeout(180)

EMPTY_IN_DEMO = {
    "min by (kind) (drop_explainer_cluster_synced)":
        "the demo's cluster state is a file, so no kind is watched and the gauge has no series",
}
NEW_DROP = "DropExplainerNewDropSignature"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process with its output in a file, stopped for sure at the end."""

    def __init__(self, name: str, argv: list[str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def tail(self) -> str:
        return f"--- {self.name} (exit {self.popen.poll()}):\n" + self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


def _wait(what: str, check: Callable[[], Any], procs: list[Proc], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.popen.poll() is not None:
                pytest.fail(f"{p.name} exited while waiting for {what}\n{p.tail()}")
        got = check()
        if got:
            return got
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n" + "\n".join(p.tail() for p in procs))


class Webhook:
    """Alertmanager's receiver: keeps every JSON payload POSTed to it."""

    def __init__(self) -> None:
        self.payloads: queue.Queue[dict[str, Any]] = queue.Queue()
        payloads = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                payloads.put(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self) -> list[dict[str, Any]]:
        out = []
        while not self.payloads.empty():
            out.extend(self.payloads.get_nowait()["alerts"])
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Stack:
    def __init__(self, demo: int, prometheus: int, alertmanager: int, webhook: Webhook, procs: list[Proc]) -> None:
        self.demo, self.prometheus, self.alertmanager = demo, prometheus, alertmanager
        self.webhook = webhook
        self.procs = procs

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = _get(url)
        assert status == 200, f"{expr}: HTTP {status} {body[:500]!r}"
        data = json.loads(body)
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        url = (f"http://127.0.0.1:{self.prometheus}/api/v1/label/{label}/values?"
               + urllib.parse.urlencode({"match[]": match}))
        status, body = _get(url)
        assert status == 200, body
        values: list[str] = json.loads(body)["data"]
        return values


def _demo_argv(port: int) -> list[str]:
    program = Path(sys.executable).parent / "drop-explainer"
    return [str(program), "demo", "--listen", "127.0.0.1", "--port", str(port), "--store-path", ":memory:"]


@pytest.fixture(scope="module")
def stack(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("monitoring")
    probe = subprocess.run([*_demo_argv(1)[:2], "--help"], capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        pytest.fail(f"`drop-explainer demo --help` failed; this test needs the demo subcommand:\n{probe.stderr}")
    ports = {name: _free_port() for name in ("demo", "prometheus", "alertmanager")}
    webhook = Webhook()
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "webhook", "group_by": ["alertname", "namespace", "pod"],
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "webhook", "webhook_configs": [
            {"url": f"http://127.0.0.1:{webhook.port}/alerts", "send_resolved": False}]}],
    }))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(sync_generated.RULES_FILE)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]},
        "scrape_configs": [{"job_name": "drop-explainer", "honor_labels": True,
                            "static_configs": [{"targets": [f"127.0.0.1:{ports['demo']}"]}]}],
    }))
    procs: list[Proc] = []
    try:
        procs.append(Proc("demo", _demo_argv(ports["demo"]), tmp))
        procs.append(Proc("alertmanager", [
            str(tools.alertmanager), f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'am'}",
            f"--web.listen-address=127.0.0.1:{ports['alertmanager']}", "--cluster.listen-address=",
        ], tmp))
        procs.append(Proc("prometheus", [
            str(tools.prometheus), f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--rules.alert.resend-delay=1s",
        ], tmp))
        for name, path in (("demo", "/readyz"), ("alertmanager", "/-/ready"), ("prometheus", "/-/ready")):
            _wait(f"{name} {path}", lambda n=name, p=path: _get(f"http://127.0.0.1:{ports[n]}{p}")[0] == 200,
                  procs, 30)
        yield Stack(ports["demo"], ports["prometheus"], ports["alertmanager"], webhook, procs)
    finally:
        for p in reversed(procs):
            p.stop()
        webhook.close()


def _scraped(stack: Stack, samples: int) -> None:
    """Wait until Prometheus has a few scrapes of the drops, so rate() has points to work with."""
    def enough() -> bool:
        got = stack.query("count_over_time(drop_explainer_drops_total[1m])")
        return bool(got) and min(float(r["value"][1]) for r in got) >= samples

    _wait(f"{samples} scrapes of the demo", enough, stack.procs, 30)


def test_demo_exposes_every_metric_the_dashboard_and_rules_use(stack: Stack) -> None:
    """The live /metrics has every family used in deploy/ (families without samples yet count too)."""
    status, body = _get(f"http://127.0.0.1:{stack.demo}/metrics")
    assert status == 200
    live = deploy_support.exposed_names(body.decode())
    dash = deploy_support.dashboard()
    used = {m for _, q in deploy_support.panel_queries(dash) for m in deploy_support.METRIC.findall(q)}
    rules = sync_generated.RULES_FILE.read_text(encoding="utf-8")
    used |= set(deploy_support.METRIC.findall(rules))
    assert used <= live, used - live
    assert 'drop_explainer_drops_total{direction="ingress",namespace="backend",pod="pod-b"' in body.decode()


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    """Each panel's query, with All (.*) and with the incident's pod chosen, gives at least one series."""
    _scraped(stack, 4)
    dash = deploy_support.dashboard()
    empty = []
    for values in ({"namespace": ".*", "pod": ".*"}, {"namespace": "backend", "pod": "pod-b"}):
        for title, expr in deploy_support.panel_queries(dash):
            result = stack.query(deploy_support.substitute(expr, values))
            if not result and expr not in EMPTY_IN_DEMO:
                empty.append(f"{title}: {expr} with {values}")
    assert not empty, "\n".join(empty)


def test_dashboard_variables_list_the_incident(stack: Stack) -> None:
    """label_values for namespace and pod offer backend and pod-b."""
    _scraped(stack, 1)
    assert "backend" in stack.label_values("namespace", "drop_explainer_drops_total")
    assert "pod-b" in stack.label_values("pod", 'drop_explainer_drops_total{namespace=~"backend"}')


def test_rules_evaluate_without_errors(stack: Stack) -> None:
    """Prometheus loaded every rule of the file and none fails to evaluate."""
    _scraped(stack, 2)
    status, body = _get(f"http://127.0.0.1:{stack.prometheus}/api/v1/rules")
    assert status == 200
    rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
    expected = {r["alert"] for g in yaml.safe_load(sync_generated.RULES_FILE.read_text())["groups"]
                for r in g["rules"]}
    assert {r["name"] for r in rules} == expected
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_new_drop_alert_reaches_the_webhook_with_pod_and_policy(stack: Stack) -> None:
    """A drop signature the demo sees for the first time pages, through Alertmanager, with what to run."""
    received: list[dict[str, Any]] = []

    def arrived() -> list[dict[str, Any]]:
        received.extend(stack.webhook.alerts())
        return [a for a in received if a["labels"].get("alertname") == NEW_DROP]

    alerts = _wait("the new-drop alert at the webhook", arrived, stack.procs, 90)
    by_trap = {a["labels"].get("trap", ""): a for a in alerts if a["labels"]["pod"] == "pod-b"}
    assert by_trap, alerts
    for alert in by_trap.values():
        labels = alert["labels"]
        assert labels["namespace"] == "backend"
        # The DNS symptom (examples/incident-dns): pod-b's own lookups, dropped on egress.
        dns = labels.get("trap") == "dns-egress"
        assert labels["direction"] == ("egress" if dns else "ingress")
        assert labels["policy"] == ("backend/egress-to-database" if dns else "backend/default-deny")
        assert alert["status"] == "firing"
        assert alert["annotations"]["command"] == (
            "kubectl -n drop-explainer port-forward svc/explainer 8080:80\n"
            'curl localhost:8080/namespaces/backend/pods/pod-b/drops -H "Authorization: Bearer $TOKEN"')
        # The demo's pod-b is owned by ReplicaSet backend-7d4b9c (no pod-template-hash label: not a Deployment's).
        assert labels["workload"] == "backend-7d4b9c"
        assert "backend/backend-7d4b9c (first seen on pod pod-b)" in alert["annotations"]["summary"]
        assert alert["annotations"]["runbook"]
    # the command in the page works against the daemon (the port-forward stands for the Service;
    # the demo runs with --auth none, so the token is not checked here: test_auth_on_apiserver.py checks it)
    status, body = _get(f"http://127.0.0.1:{stack.demo}/namespaces/backend/pods/pod-b/drops")
    assert status == 200
    assert b"backend/default-deny" in body
