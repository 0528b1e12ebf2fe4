"""One settings object for the daemon, from flags and DROP_EXPLAINER_* variables.

Every option is declared once in OPTIONS: the argument parser, the
environment lookup and the README's table all come from it, so they cannot
drift apart. Flags win over the environment, which wins over the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drop_explainer.api.server import ServerLimits
from drop_explainer.cluster import enforcer
from drop_explainer.export import config as export_config
from drop_explainer.policy import profiles
from drop_explainer.sources import antrea, calico
from drop_explainer.sources.channels import TlsSettings
from drop_explainer.sources.hubble import DEFAULT_TARGET, HubbleSettings

ENV_PREFIX = "DROP_EXPLAINER_"
SOURCES = ("hubble", "calico-goldmane", "calico-felix", "antrea", "replay")


class SettingsError(ValueError):
    """A setting has a value that cannot work; the message names it."""


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    """Flag name without dashes, e.g. api-port; env is DROP_EXPLAINER_API_PORT."""
    default: Any
    help: str
    kind: Callable[[str], Any] = str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


OPTIONS: tuple[Option, ...] = (
    Option("node-name", "", "This instance's node (the DaemonSet sets it from spec.nodeName)."),
    Option("source", "hubble", "Where flows come from: hubble, calico-goldmane, calico-felix, antrea or replay."),
    Option("hubble-target", DEFAULT_TARGET, "Hubble gRPC target: unix:///path (node-local) or host:port (relay)."),
    Option("hubble-tls-ca", "", "CA file that signed the Hubble server certificate (enables TLS)."),
    Option("hubble-tls-cert", "", "Client certificate for mTLS (hubble-relay)."),
    Option("hubble-tls-key", "", "Client key for mTLS."),
    Option("hubble-tls-server-name", "", "Server name to verify instead of the target host."),
    Option("hubble-verdicts", ("DROPPED", "AUDIT"), "Verdicts to ask Hubble for (comma separated).", _csv),
    Option("hubble-node-names", (), "Only these nodes' flows (through relay; comma separated).", _csv),
    Option("hubble-transport", "h2", "gRPC client: h2 (fast, reads many messages per read) or grpcio."),
    Option("goldmane-target", calico.DEFAULT_GOLDMANE_TARGET, "Calico Goldmane gRPC target (host:port)."),
    Option("goldmane-tls-ca", "", "CA file that signed Goldmane's certificate."),
    Option("goldmane-tls-cert", "", "Client certificate for Goldmane's mTLS (required by Goldmane)."),
    Option("goldmane-tls-key", "", "Client key for Goldmane's mTLS."),
    Option("goldmane-tls-server-name", "", "Server name to verify instead of the Goldmane target host."),
    Option("felix-socket", calico.DEFAULT_FELIX_SOCKET, "Unix socket we serve for Felix's node-local flow reporter."),
    Option("antrea-target", antrea.DEFAULT_TARGET, "Antrea Flow Aggregator flow stream (host:port, port 14740)."),
    Option("antrea-tls-ca", "", "CA file that signed the Flow Aggregator's certificate (enables TLS)."),
    Option("antrea-tls-server-name", "", "Server name to verify instead of the Antrea target host."),
    Option("antrea-namespaces", (), "Only flows with an end in these namespaces (comma separated).", _csv),
    Option("antrea-initial-history", False, "On the first connect, also take the aggregator's buffered flows.",
           _bool),
    Option("replay-file", "", "With source=replay: a flow file (our JSON lines, hubble observe, exporter)."),
    Option("state", "", "A saved cluster state (file or directory) instead of the Kubernetes API."),
    Option("kubeconfig", "", "Kubeconfig path; empty: in-cluster config, else ~/.kube/config."),
    Option("kube-context", "", "Kubeconfig context to use."),
    Option("listen", "0.0.0.0", "Address of the HTTP API and /metrics."),
    Option("port", 8080, "Port of the HTTP API and /metrics.", int),
    Option("probe-port", 0, "Port of /healthz and /readyz answered off the event loop, so a flood of drops never "
           "delays the kubelet's probes (deploy/ uses 8081); 0: probes on the API's port only.", int),
    Option("probe-stall-after", 30.0, "Seconds without the event loop refreshing the probe answers after which "
           "/healthz on the probe port says the daemon is stalled (503).", float),
    Option("api-header-timeout", 10.0, "Seconds for a request's headers to arrive (slow clients are cut off).",
           float),
    Option("api-max-connections", 256, "Open API connections at most; over it the longest-idle one is closed.",
           int),
    Option("store-path", "/var/lib/drop-explainer/drops.db", "SQLite file of the drop history (:memory: for none)."),
    Option("store-max-per-pod", 200, "Drop signatures kept per affected pod.", int),
    Option("store-max-total", 20000, "Drop signatures kept in total.", int),
    Option("store-retention-hours", 168.0, "Forget signatures not seen for this long.", float),
    Option("events", True, "Create Kubernetes Events on pods for new drop signatures.", _bool),
    Option("policy-enforcer", "", "Who enforces NetworkPolicy (cilium, calico, antrea, none...); empty: detect it."),
    Option("cni", "", "CNI profile for node-local traffic (spec, cilium, calico, antrea, kube-router, aws-vpc-cni, "
           "kube-network-policies, ovn-kubernetes; settings after commas, e.g. cilium,allow-localhost=policy); "
           "empty: the detected enforcer's, else the flow source's (hubble: cilium, calico-*: calico, antrea)."),
    Option("not-enforced-events", True, "Where nothing enforces policy, one Event on each new NetworkPolicy.", _bool),
    Option("mode", "daemonset", "daemonset (each instance holds its node's drops) or single (one instance).",),
    Option("peers", "", "Static peers node=url,... (tests); default: the DaemonSet's own pods from the API."),
    Option("peer-namespace", "drop-explainer", "Namespace of the DaemonSet's pods."),
    Option("peer-selector", "app.kubernetes.io/name=drop-explainer", "Label selector of the DaemonSet's pods."),
    Option("peer-timeout", 2.0, "Seconds to wait for a peer during fan-out.", float),
    Option("peer-max-bytes", 8 * 1024 * 1024, "Largest answer read from one peer (bytes); larger is refused.", int),
    Option("peer-inflight-bytes", 64 * 1024 * 1024, "Bytes of peer answers held at once, all fan-outs together.",
           int),
    Option("auth", "kubernetes", "Who may ask: kubernetes (TokenReview + SubjectAccessReview) or none (anyone)."),
    Option("auth-audiences", (), "Audiences a caller's token must carry (TokenReview; comma separated).", _csv),
    Option("auth-cache-ttl", 10.0, "Seconds a TokenReview or SubjectAccessReview answer is reused.", float),
    Option("auth-verb", "get", "Verb a caller needs in a namespace to see its drops and what-ifs."),
    Option("auth-resource", "drops", "Resource checked with --auth-verb (a virtual one: grant it by ClusterRole)."),
    Option("auth-group", "drop-explainer.io", "API group of --auth-resource (empty: the core group)."),
    Option("auth-peer-user", "system:serviceaccount:drop-explainer:drop-explainer",
           "The only identity whose requests may carry Impersonate-* headers (the daemon's own, in fan-out)."),
    Option("tls-cert", "", "Serving certificate of the API (PEM, a Secret's tls.crt); with --tls-key: https only."),
    Option("tls-key", "", "Key of --tls-cert (PEM, e.g. tls.key). Both files are reloaded when they change."),
    Option("tls-client-ca", "", "CA file to verify client certificates with; a verified one may stand for a token."),
    Option("tls-require-client-cert", False, "Refuse TLS clients without a certificate from --tls-client-ca.", _bool),
    Option("tls-peer-ca", "", "CA of the other instances' serving certificates (fan-out); empty: --tls-client-ca."),
    Option("tls-peer-server-name", "", "Name to verify in a peer's certificate (e.g. the Service's DNS name)."),
    Option("api-rate", 5.0, "What each caller may ask per second, on average (token bucket; 0: no limit).", float),
    Option("api-burst", 20, "Requests a caller may send at once before --api-rate applies.", int),
    Option("api-concurrency", 1, "What-if computations at once, each in a worker thread (they share one GIL).",
           int),
    Option("api-fanout-concurrency", 8, "Cluster-wide questions asking the peers at once.", int),
    Option("api-deadline", 10.0, "Seconds a request may take before it is answered 504.", float),
    Option("whatif-cache-bytes", 16 * 1024 * 1024, "Bytes of what-if answers kept for the current state.", int),
    Option("export-otlp-endpoint", "", "OTLP/gRPC logs receiver (host:port, e.g. a Collector's 4317) to export "
           "explained drops to; empty: no OTLP export."),
    Option("export-otlp-tls", False, "TLS to the OTLP receiver (the system's roots unless --export-otlp-tls-ca).",
           _bool),
    Option("export-otlp-tls-ca", "", "CA file of the OTLP receiver's certificate (enables TLS)."),
    Option("export-otlp-tls-cert", "", "Client certificate for mTLS to the OTLP receiver."),
    Option("export-otlp-tls-key", "", "Client key of --export-otlp-tls-cert."),
    Option("export-otlp-tls-server-name", "", "Name to verify in the OTLP receiver's certificate."),
    Option("export-otlp-headers", "", "Headers sent with every export, name=value,... (a token: set the variable "
           "from a Secret rather than a flag)."),
    Option("export-otlp-compression", "none", "none or gzip.", ),
    Option("export-otlp-timeout", 10.0, "Seconds one export call may take before it is retried.", float),
    Option("export-file", "", "JSON lines file to export explained drops to (Fluent Bit, Vector); empty: none."),
    Option("export-file-max-size-mb", 10.0, "Rotate --export-file when it would grow past this (MiB).", float),
    Option("export-file-max-backups", 5, "Rotated files kept (<file>.1 is the newest).", int),
    Option("export-what", ("new", "updates"), "What to export: new (a signature's first drop), updates (periodic "
           "counts; comma separated).", _csv),
    Option("export-update-interval", 60.0, "Seconds between count updates of a signature that keeps dropping.",
           float),
    Option("export-update-sample", 1.0, "Fraction of count updates exported (0..1); skipped counts carry over.",
           float),
    Option("export-queue-bytes", 16 * 1024 * 1024, "Bytes of records queued per destination while it is slow or "
           "down; beyond, records are refused and counted.", int),
    Option("log-format", "auto", "json, console or auto (console on a terminal)."),
    Option("log-level", "info", "debug, info, warning or error."),
)


@dataclass(frozen=True, slots=True)
class StoreSettings:
    path: str
    max_per_pod: int
    max_total: int
    retention_seconds: float


@dataclass(frozen=True, slots=True)
class PeerSettings:
    mode: str
    static: Mapping[str, str]
    """node name -> base URL; empty means discover the DaemonSet's pods."""
    namespace: str
    selector: Mapping[str, str]
    port: int
    timeout_s: float
    max_bytes: int = 8 * 1024 * 1024
    """Largest answer read from one peer."""
    inflight_bytes: int = 64 * 1024 * 1024
    """Peer answer bytes held at once across all fan-outs."""
    scheme: str = "http"
    """https when the API serves TLS (--tls-cert): the peers do too."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Who may ask the API what (api/auth.py, api/guard.py); mode none answers anyone."""

    mode: str = "kubernetes"
    audiences: tuple[str, ...] = ()
    cache_ttl_s: float = 10.0
    verb: str = "get"
    resource: str = "drops"
    group: str = "drop-explainer.io"
    peer_user: str = "system:serviceaccount:drop-explainer:drop-explainer"


@dataclass(frozen=True, slots=True)
class ServingTls:
    """Files of the API's TLS (api/tls.py)."""

    cert: str
    key: str
    client_ca: str | None = None
    require_client_cert: bool = False
    peer_ca: str | None = None
    """CA that signed the other instances' serving certificates (fan-out); None: client_ca."""
    peer_server_name: str | None = None
    """Name to verify in a peer's certificate instead of its pod IP."""


@dataclass(frozen=True, slots=True)
class CostSettings:
    """What one caller, and all callers together, may cost (api/costs.py)."""

    rate: float = 5.0
    burst: int = 20
    concurrency: int = 1
    fanout_concurrency: int = 8
    deadline_s: float = 10.0
    whatif_cache_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    node_name: str
    source: str
    hubble: HubbleSettings
    goldmane: calico.GoldmaneSettings
    felix: calico.FelixSettings
    replay_file: str | None
    state_path: str | None
    kubeconfig: str | None
    kube_context: str | None
    listen: str
    port: int
    store: StoreSettings
    events: bool
    peers: PeerSettings
    log_format: str
    log_level: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    antrea: antrea.AntreaSettings = field(default_factory=antrea.AntreaSettings)
    policy_enforcer: str = ""
    """Configured enforcer name; empty = detect it from the cluster (cluster/enforcer.py)."""
    not_enforced_events: bool = True
    api: ServerLimits = field(default_factory=ServerLimits)
    """The HTTP server's header deadline and connection cap (api/server.py)."""
    auth: AuthSettings = field(default_factory=AuthSettings)
    cni: str = ""
    """Configured CNI profile (policy/profiles.py syntax); empty = detected, else the source's default."""
    tls: ServingTls | None = None
    """None: plaintext HTTP."""
    costs: CostSettings = field(default_factory=CostSettings)
    export: export_config.ExportSettings = field(default_factory=export_config.ExportSettings)
    probe_port: int = 0
    """0: no probe port (the probes answer on the API's port only)."""
    probe_stall_after_s: float = 30.0


def _serving_tls(v: Mapping[str, Any]) -> ServingTls | None:
    if bool(v["tls_cert"]) != bool(v["tls_key"]):
        raise SettingsError("--tls-cert and --tls-key go together")
    if not v["tls_cert"]:
        if v["tls_client_ca"] or v["tls_require_client_cert"]:
            raise SettingsError("--tls-client-ca and --tls-require-client-cert need --tls-cert and --tls-key")
        return None
    if v["tls_require_client_cert"] and not v["tls_client_ca"]:
        raise SettingsError("--tls-require-client-cert needs --tls-client-ca to verify the certificates with")
    return ServingTls(v["tls_cert"], v["tls_key"], v["tls_client_ca"] or None, v["tls_require_client_cert"],
                      v["tls_peer_ca"] or None, v["tls_peer_server_name"] or None)


def _costs(v: Mapping[str, Any]) -> CostSettings:
    if v["api_rate"] < 0 or v["api_burst"] < 1:
        raise SettingsError("--api-rate must be >= 0 (0: no limit) and --api-burst >= 1")
    if v["api_concurrency"] < 1 or v["api_fanout_concurrency"] < 1:
        raise SettingsError("--api-concurrency and --api-fanout-concurrency must be at least 1")
    if v["api_deadline"] <= 0:
        raise SettingsError(f"--api-deadline: {v['api_deadline']} is not a positive number of seconds")
    if v["whatif_cache_bytes"] < 0:
        raise SettingsError("--whatif-cache-bytes must be >= 0 (0: no cache)")
    return CostSettings(v["api_rate"], v["api_burst"], v["api_concurrency"], v["api_fanout_concurrency"],
                        v["api_deadline"], v["whatif_cache_bytes"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for opt in OPTIONS:
        shown = ",".join(opt.default) if isinstance(opt.default, tuple) else opt.default
        parser.add_argument(f"--{opt.name}", dest=opt.dest, default=None, metavar=opt.env,
                            help=f"{opt.help} [default: {shown!s}]")


def _value(opt: Option, args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    raw = getattr(args, opt.dest, None)
    if raw is None:
        raw = env.get(opt.env)
    if raw is None:
        return opt.default
    try:
        return opt.kind(raw)
    except ValueError as exc:
        raise SettingsError(f"--{opt.name} / {opt.env}: {exc}") from None


def _pairs(text: str, what: str, sep: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _csv(text):
        key, eq, value = item.partition(sep)
        if not eq or not key or not value:
            raise SettingsError(f"{what}: expected key{sep}value pairs, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _tls(v: Mapping[str, Any], source: str) -> TlsSettings | None:
    """TLS from the --SOURCE-tls-* options; none of them given means plaintext."""
    ca, cert = v[f"{source}_tls_ca"], v[f"{source}_tls_cert"]
    if not (ca or cert):
        return None
    return TlsSettings(ca or None, cert or None, v[f"{source}_tls_key"] or None,
                       v[f"{source}_tls_server_name"] or None)


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Build and check the settings; raises SettingsError naming the bad option."""
    env = os.environ if env is None else env
    v = {opt.dest: _value(opt, args, env) for opt in OPTIONS}
    if v["source"] not in SOURCES:
        raise SettingsError(f"--source: expected {', '.join(SOURCES)}, got {v['source']!r}")
    if v["source"] == "calico-goldmane" and not (v["goldmane_tls_cert"] and v["goldmane_tls_key"]):
        raise SettingsError("--source calico-goldmane needs --goldmane-tls-cert and --goldmane-tls-key: "
                            "Goldmane accepts only mTLS clients")
    if v["source"] == "replay" and not v["replay_file"]:
        raise SettingsError("--replay-file is required with --source replay")
    if v["policy_enforcer"] and v["policy_enforcer"] not in enforcer.PROFILE_OF:
        raise SettingsError(f"--policy-enforcer: expected one of {', '.join(sorted(enforcer.PROFILE_OF))}, "
                            f"got {v['policy_enforcer']!r}")
    if v["cni"]:
        try:
            profiles.parse(v["cni"])
        except profiles.ProfileError as exc:
            raise SettingsError(f"--cni: {exc}") from None
    if v["mode"] not in ("daemonset", "single"):
        raise SettingsError(f"--mode: expected daemonset or single, got {v['mode']!r}")
    if not 0 <= v["probe_port"] < 65536:
        raise SettingsError(f"--probe-port: {v['probe_port']} is not a port (0: no probe port)")
    if v["probe_port"] and v["probe_port"] == v["port"]:
        raise SettingsError(f"--probe-port: {v['probe_port']} is the API's --port too; choose another (or 0)")
    if not v["probe_stall_after"] > 0:  # `not`: nan is refused too
        raise SettingsError(f"--probe-stall-after: {v['probe_stall_after']} is not a positive number of seconds")
    if not 0 <= v["port"] < 65536:  # 0: any free port (tests)
        raise SettingsError(f"--port: {v['port']} is not a port")
    if not 0 < v["api_header_timeout"] <= 3600 or v["api_max_connections"] < 1:  # `not`: nan is refused too
        raise SettingsError("--api-header-timeout: expected seconds above 0, at most 3600; "
                            "--api-max-connections: at least 1")
    if v["auth"] not in ("kubernetes", "none"):
        raise SettingsError(f"--auth: expected kubernetes or none, got {v['auth']!r}")
    if v["auth_cache_ttl"] < 0:
        raise SettingsError(f"--auth-cache-ttl: {v['auth_cache_ttl']} is negative")
    if v["peer_max_bytes"] < 1024 or v["peer_inflight_bytes"] < v["peer_max_bytes"]:
        raise SettingsError("--peer-max-bytes must be at least 1024 and --peer-inflight-bytes at least as large")
    tls = _tls(v, "hubble")
    if v["hubble_transport"] not in ("h2", "grpcio"):
        raise SettingsError(f"--hubble-transport: expected h2 or grpcio, got {v['hubble_transport']!r}")
    hubble = HubbleSettings(target=v["hubble_target"], tls=tls, verdicts=tuple(v["hubble_verdicts"]),
                            node_names=tuple(v["hubble_node_names"]), transport=v["hubble_transport"])
    node_name = v["node_name"] or env.get("NODE_NAME", "")
    serving = _serving_tls(v)
    try:
        export = export_config.from_values(v)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return Settings(
        node_name=node_name,
        source=v["source"],
        hubble=hubble,
        goldmane=calico.GoldmaneSettings(target=v["goldmane_target"], tls=_tls(v, "goldmane")),
        felix=calico.FelixSettings(socket_path=v["felix_socket"], node_name=node_name or None),
        replay_file=v["replay_file"] or None,
        state_path=v["state"] or None,
        kubeconfig=v["kubeconfig"] or None,
        kube_context=v["kube_context"] or None,
        listen=v["listen"],
        port=v["port"],
        store=StoreSettings(v["store_path"], v["store_max_per_pod"], v["store_max_total"],
                            v["store_retention_hours"] * 3600),
        events=v["events"],
        peers=PeerSettings(v["mode"], _pairs(v["peers"], "--peers", "="), v["peer_namespace"],
                           _pairs(v["peer_selector"], "--peer-selector", "="), v["port"], v["peer_timeout"],
                           v["peer_max_bytes"], v["peer_inflight_bytes"],
                           scheme="https" if serving is not None else "http"),
        log_format=v["log_format"],
        log_level=v["log_level"],
        antrea=antrea.AntreaSettings(
            target=v["antrea_target"],
            tls=TlsSettings(v["antrea_tls_ca"], None, None, v["antrea_tls_server_name"] or None)
            if v["antrea_tls_ca"] else None,
            namespaces=tuple(v["antrea_namespaces"]), initial_history=v["antrea_initial_history"]),
        policy_enforcer=v["policy_enforcer"],
        not_enforced_events=v["not_enforced_events"],
        api=ServerLimits(v["api_header_timeout"], v["api_max_connections"]),
        probe_port=v["probe_port"], probe_stall_after_s=v["probe_stall_after"],
        auth=AuthSettings(mode=v["auth"], audiences=tuple(v["auth_audiences"]), cache_ttl_s=v["auth_cache_ttl"],
                          verb=v["auth_verb"], resource=v["auth_resource"], group=v["auth_group"],
                          peer_user=v["auth_peer_user"]),
        cni=v["cni"],
        tls=serving,
        costs=_costs(v),
        export=export,
    )


def options_markdown() -> str:
    """The README's table of options."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for opt in OPTIONS:
        shown = ",".join(opt.default) if isinstance(opt.default, tuple) else opt.default
        rows.append(f"| `--{opt.name}` | `{opt.env}` | `{shown}` | {opt.help} |")
    return "\n".join(rows)
