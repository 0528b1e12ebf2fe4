"""Run a real etcd + kube-apiserver on 127.0.0.1 for integration tests.

Why a real server: list/watch semantics (resourceVersions, bookmarks, 410 Gone
after compaction), admission defaults and RBAC decisions are exactly what the
daemon depends on, and fakes get them subtly wrong.

Everything listens on loopback only, on ports picked free at start. Child
processes run in their own process groups and get PR_SET_PDEATHSIG(SIGKILL),
so they die with the test process even if it is SIGKILLed; an atexit hook and
SIGTERM/SIGINT handlers stop them on the ordinary paths.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import ctypes.util
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # the kubernetes client is only needed by callers that ask for it
    from kubernetes.client import ApiClient

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-k8s-binaries.sh"

LOOPBACK = "127.0.0.1"

ADMIN_USER = "drop-explainer-test-admin"
ADMIN_GROUPS = ("system:masters", "system:authenticated")
DAEMON_NAMESPACE = "drop-explainer"
DAEMON_SERVICE_ACCOUNT = "drop-explainer"
DAEMON_USER = f"system:serviceaccount:{DAEMON_NAMESPACE}:{DAEMON_SERVICE_ACCOUNT}"
DAEMON_GROUPS = (
    "system:serviceaccounts",
    f"system:serviceaccounts:{DAEMON_NAMESPACE}",
    "system:authenticated",
)
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"  # config only: nothing is routed there
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Generous: the first start on a busy 2-core machine can take a while.
DEFAULT_READY_TIMEOUT_S = float(os.environ.get("DROP_EXPLAINER_APISERVER_READY_TIMEOUT", "180"))
DEFAULT_BUILD_TIMEOUT_S = float(os.environ.get("DROP_EXPLAINER_K8S_BUILD_TIMEOUT", "3600"))
# Set to keep the etcd data dir after stop() for post-mortem debugging.
KEEP_DATA_ENV = "DROP_EXPLAINER_KEEP_APISERVER_DATA"


class HarnessError(RuntimeError):
    """The harness could not build, start or talk to etcd / kube-apiserver."""


# --------------------------------------------------------------------------
# Building the binaries
# --------------------------------------------------------------------------


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def build_binaries(timeout: float = DEFAULT_BUILD_TIMEOUT_S) -> Path:
    """Run scripts/build-k8s-binaries.sh and return the directory it prints.

    Why a script and not Python: the same build is run by the Makefile / CI
    ahead of the tests, and a cached build returns in milliseconds.
    """
    if not BUILD_SCRIPT.is_file():
        raise HarnessError(f"build script not found: {BUILD_SCRIPT}")
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise HarnessError(
            f"{BUILD_SCRIPT.name} did not finish within {timeout:.0f}s\n--- stderr tail ---\n{_tail(err)}"
        ) from exc
    if proc.returncode != 0:
        raise HarnessError(
            f"{BUILD_SCRIPT.name} failed with exit code {proc.returncode}\n"
            f"--- stdout tail ---\n{_tail(proc.stdout)}\n--- stderr tail ---\n{_tail(proc.stderr)}"
        )
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise HarnessError(f"{BUILD_SCRIPT.name} printed no binary directory\n{_tail(proc.stderr)}")
    bin_dir = Path(lines[-1])
    for name in ("etcd", "kube-apiserver"):
        if not os.access(bin_dir / name, os.X_OK):
            raise HarnessError(f"{BUILD_SCRIPT.name} reported {bin_dir} but {name} is missing there")
    return bin_dir


# --------------------------------------------------------------------------
# Child-process lifetime: process groups, PDEATHSIG, atexit and signals
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_LIBC: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    # Loaded in the parent: dlopen() between fork and exec is not safe.
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)

_LIVE_LOCK = threading.Lock()
_LIVE_PROCS: dict[int, subprocess.Popen[bytes]] = {}
_LIVE_SERVERS: set[KubeApiServer] = set()
_SignalHandler = Callable[[int, FrameType | None], Any] | int | None
_PREV_HANDLERS: dict[int, _SignalHandler] = {}
_HOOKS_STATE = {"installed": False}


def _make_preexec(parent_pid: int) -> Callable[[], None]:
    """Child side of fork: die with the parent, even when it is SIGKILLed."""

    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # parent died before prctl took effect
            os._exit(1)

    return preexec


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session=True: pgid == pid


def _kill_all_now() -> None:
    """Emergency stop: SIGKILL every child group we started (signal-safe enough)."""
    for proc in list(_LIVE_PROCS.values()):
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _kill_all_now()
    prev = _PREV_HANDLERS.get(signum)
    if callable(prev):
        prev(signum, frame)  # e.g. SIGINT -> KeyboardInterrupt -> pytest teardown
        return
    if prev == signal.SIG_IGN:
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _atexit_cleanup() -> None:
    for server in list(_LIVE_SERVERS):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            server.stop(grace_s=2.0)
    _kill_all_now()


def _install_hooks() -> None:
    if _HOOKS_STATE["installed"]:
        return
    _HOOKS_STATE["installed"] = True
    atexit.register(_atexit_cleanup)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            prev = signal.getsignal(sig)
            if prev == signal.SIG_IGN:  # e.g. SIGINT in a background job: keep ignoring it
                continue
            _PREV_HANDLERS[sig] = prev
            signal.signal(sig, _on_signal)


def _spawn(args: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    _install_hooks()
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # PR_SET_PDEATHSIG can only be set in the child; the callback touches no locks.
            preexec_fn=_make_preexec(os.getpid()),  # noqa: PLW1509
            close_fds=True,
        )
    finally:
        log.close()
    with _LIVE_LOCK:
        _LIVE_PROCS[proc.pid] = proc
    return proc


def _stop_process(proc: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """SIGTERM the group, then SIGKILL after grace_s; always reap."""
    if proc is None:
        return
    if proc.poll() is None:
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
    # No killpg after reaping: the pid could by then belong to someone else.
    with _LIVE_LOCK:
        _LIVE_PROCS.pop(proc.pid, None)


# --------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the caller retries on races)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _read_tail(path: Path, lines: int = 60) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except FileNotFoundError:
        return "(no log)"


def _generate_rsa_keypair(private_path: Path, public_path: Path) -> None:
    """Service-account signing key; `cryptography` if importable, else openssl."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise HarnessError(
                "need the 'openssl' CLI (Debian package openssl) or the Python 'cryptography' "
                "package to generate the service-account signing key"
            ) from None
        for cmd in (
            [openssl, "genrsa", "-out", str(private_path), "2048"],
            [openssl, "rsa", "-in", str(private_path), "-pubout", "-out", str(public_path)],
        ):
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise HarnessError(f"{' '.join(cmd)} failed: {res.stderr}") from None
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


# --------------------------------------------------------------------------
# The server pair
# --------------------------------------------------------------------------


class KubeApiServer:
    """One etcd + one kube-apiserver, both on 127.0.0.1, rooted in `workdir`.

    Attributes used by tests: ``url``, ``admin_kubeconfig``, ``daemon_kubeconfig``,
    ``admin_token``, ``daemon_token``, ``ca_file``, ``etcd_url``.
    Methods: ``start()``, ``stop()``, ``restart_apiserver()``, ``compact_etcd()``,
    ``expire_resource_versions()``, ``readyz()``, ``admin_api_client()``,
    ``daemon_api_client()``, ``ssl_context()``.

    ``watch_cache=False`` runs kube-apiserver with --watch-cache=false so that
    watches read etcd directly (compaction alone then yields 410; no bookmarks).
    """

    def __init__(
        self,
        bin_dir: Path,
        workdir: Path | None = None,
        *,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        watch_cache: bool = True,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self.bin_dir = Path(bin_dir)
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="drop-explainer-apiserver-"))
        )
        self.ready_timeout_s = ready_timeout_s
        self.watch_cache = watch_cache
        self.extra_apiserver_args = list(extra_apiserver_args)

        self.admin_token = secrets.token_hex(24)
        self.daemon_token = secrets.token_hex(24)

        self.etcd_data_dir = self.workdir / "etcd-data"
        self.cert_dir = self.workdir / "certs"
        self.token_file = self.workdir / "tokens.csv"
        self.sa_key_file = self.workdir / "sa.key"
        self.sa_pub_file = self.workdir / "sa.pub"
        self.etcd_log = self.workdir / "etcd.log"
        self.apiserver_log = self.workdir / "kube-apiserver.log"
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self.daemon_kubeconfig = self.workdir / "daemon.kubeconfig"

        self.port = 0
        self.etcd_port = 0
        self.etcd_peer_port = 0
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._stopped = False

    # ---- addresses -------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{LOOPBACK}:{self.etcd_port}"

    @property
    def ca_file(self) -> Path:
        """Self-signed serving bundle (cert + its CA) kube-apiserver writes into --cert-dir."""
        return self.cert_dir / "apiserver.crt"

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> KubeApiServer:
        """Start etcd, then kube-apiserver; return once /readyz is ok."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert_dir.mkdir(exist_ok=True)
        self._write_token_file()
        _generate_rsa_keypair(self.sa_key_file, self.sa_pub_file)
        with _LIVE_LOCK:
            _LIVE_SERVERS.add(self)
        try:
            self._start_etcd_with_retries()
            self._start_apiserver_with_retries()
            self._write_kubeconfigs()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop both processes (apiserver first); idempotent, safe after failures."""
        if self._stopped:
            return
        self._stopped = True
        try:
            _stop_process(self._apiserver, grace_s)
        finally:
            self._apiserver = None
            try:
                _stop_process(self._etcd, grace_s)
            finally:
                self._etcd = None
                with _LIVE_LOCK:
                    _LIVE_SERVERS.discard(self)
                if not os.environ.get(KEEP_DATA_ENV):
                    # etcd preallocates 64 MiB WAL files: don't leave them behind.
                    shutil.rmtree(self.etcd_data_dir, ignore_errors=True)
                    if self._own_workdir:
                        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port; etcd (data) stays."""
        if self._stopped:
            raise HarnessError("restart_apiserver() after stop()")
        _stop_process(self._apiserver, 30.0)
        self._apiserver = None
        self._launch_apiserver()
        self._wait_apiserver_ready()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- etcd ------------------------------------------------------------

    def _start_etcd_with_retries(self, attempts: int = 3) -> None:
        last: HarnessError | None = None
        for _ in range(attempts):
            self.etcd_port, self.etcd_peer_port = free_port(), free_port()
            while self.etcd_peer_port == self.etcd_port:
                self.etcd_peer_port = free_port()
            shutil.rmtree(self.etcd_data_dir, ignore_errors=True)
            self._etcd = _spawn(self._etcd_args(), self.etcd_log)
            try:
                self._wait_etcd_healthy()
                return
            except HarnessError as exc:  # most likely a port race: pick new ports
                last = exc
                _stop_process(self._etcd, 5.0)
                self._etcd = None
        assert last is not None
        raise last

    def _etcd_args(self) -> list[str]:
        client = f"http://{LOOPBACK}:{self.etcd_port}"
        peer = f"http://{LOOPBACK}:{self.etcd_peer_port}"
        return [
            str(self.bin_dir / "etcd"),
            "--name=drop-explainer-test",
            f"--data-dir={self.etcd_data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=drop-explainer-test={peer}",
            "--initial-cluster-state=new",
            "--log-level=warn",
            # Throwaway data: skip fsync so a loaded 2-core CI box stays fast.
            "--unsafe-no-fsync=true",
        ]

    def _wait_etcd_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self._etcd is None or self._etcd.poll() is not None:
                raise HarnessError(
                    f"etcd exited early (code {self._etcd.returncode if self._etcd else '?'})\n"
                    f"--- {self.etcd_log} tail ---\n{_read_tail(self.etcd_log)}"
                )
            try:
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                    body = json.loads(resp.read().decode())
                    if str(body.get("health")) == "true":
                        return
                    last = json.dumps(body)
            except (OSError, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise HarnessError(
            f"etcd not healthy after {timeout_s:.0f}s (last: {last})\n"
            f"--- {self.etcd_log} tail ---\n{_read_tail(self.etcd_log)}"
        )

    def _etcd_post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Call etcd's v3 JSON gateway (no etcdctl needed)."""
        req = urllib.request.Request(
            f"{self.etcd_url}{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                result: dict[str, Any] = json.loads(resp.read().decode() or "{}")
                return result
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise HarnessError(f"etcd POST {path} -> HTTP {exc.code}: {body}") from exc

    def etcd_revision(self) -> int:
        """etcd's current (cluster-wide) revision; equals the newest resourceVersion."""
        resp = self._etcd_post("/v3/kv/range", {"key": base64.b64encode(b"/").decode(), "limit": 1})
        return int(resp["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision, physically; return that revision.

        After this, any list/watch from an older resourceVersion that reaches
        etcd fails with 410 Gone. Caveat (real apiserver behaviour): with the
        watch cache on (the default, as in production) a *watch* from an old
        resourceVersion that is still inside the cache's window is served from
        memory and does NOT get 410. Use `expire_resource_versions()` for a
        guaranteed 410, or a server built with ``watch_cache=False``.
        """
        revision = self.etcd_revision()
        try:
            self._etcd_post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        except HarnessError as exc:
            if "compacted" not in str(exc):  # already compacted to this revision: fine
                raise
        return revision

    def expire_resource_versions(self) -> int:
        """Make every resourceVersion issued so far answer 410 Gone; return the compacted revision.

        Compacts etcd, then restarts kube-apiserver so its watch cache restarts
        at the compacted revision: the way 410s happen in production (apiserver
        rollout, or a watcher that fell behind). Open watches are cut by the restart.
        """
        revision = self.compact_etcd()
        if self.watch_cache:
            self.restart_apiserver()
        return revision

    # ---- kube-apiserver --------------------------------------------------

    def _write_token_file(self) -> None:
        # CSV: token,user,uid,"group1,group2,..."
        rows = [
            (self.admin_token, ADMIN_USER, "uid-drop-explainer-test-admin", ADMIN_GROUPS),
            (self.daemon_token, DAEMON_USER, "uid-drop-explainer-daemon", DAEMON_GROUPS),
        ]
        text = "".join(f'{tok},{user},{uid},"{",".join(groups)}"\n' for tok, user, uid, groups in rows)
        self.token_file.write_text(text)
        self.token_file.chmod(0o600)

    def _apiserver_args(self) -> list[str]:
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={self.port}",
            f"--cert-dir={self.cert_dir}",
            f"--token-auth-file={self.token_file}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self.sa_pub_file}",
            f"--service-account-signing-key-file={self.sa_key_file}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # Defaults (NamespaceLifecycle, ServiceAccount, LimitRanger, PodSecurity,
            # DefaultTolerationSeconds, ResourceQuota, ...) plus what real clusters add.
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            # 127.0.0.1 is not a valid Endpoints address; no kube-proxy here anyway.
            "--endpoint-reconciler-type=none",
            # Tests decide when etcd is compacted (compact_etcd()), not a 5-minute timer.
            "--etcd-compaction-interval=0",
            "--profiling=false",
            "--v=1",
            *([] if self.watch_cache else ["--watch-cache=false"]),
            *self.extra_apiserver_args,
        ]

    def _launch_apiserver(self) -> None:
        with open(self.apiserver_log, "ab") as log:
            log.write(f"\n===== starting kube-apiserver on {self.url} at {time.ctime()} =====\n".encode())
        self._apiserver = _spawn(self._apiserver_args(), self.apiserver_log)

    def _start_apiserver_with_retries(self, attempts: int = 3) -> None:
        last: HarnessError | None = None
        for _ in range(attempts):
            self.port = free_port()
            self._launch_apiserver()
            try:
                self._wait_apiserver_ready()
                return
            except HarnessError as exc:
                last = exc
                exited = self._apiserver is not None and self._apiserver.poll() is not None
                _stop_process(self._apiserver, 5.0)
                self._apiserver = None
                # Only a lost port race is worth another try; anything else is real.
                if not (exited and "address already in use" in _read_tail(self.apiserver_log, 20)):
                    raise
        assert last is not None
        raise last

    def ssl_context(self) -> ssl.SSLContext:
        """TLS context that verifies the apiserver against its self-generated CA (for raw HTTP tests)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _probe_ssl_context(self) -> ssl.SSLContext:
        # The readiness probe runs before the serving cert exists on disk.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _wait_apiserver_ready(self) -> None:
        """Wait for /readyz and for the system namespaces.

        Why the namespaces: /readyz can pass before the bootstrap controller has
        created default/kube-system/kube-public, and tests may use them at once.
        """
        deadline = time.monotonic() + self.ready_timeout_s
        pending = [
            "/readyz?verbose",
            *(f"/api/v1/namespaces/{ns}" for ns in ("default", "kube-system", "kube-public")),
        ]
        last = ""
        ctx = self._probe_ssl_context()
        while time.monotonic() < deadline:
            proc = self._apiserver
            if proc is None or proc.poll() is not None:
                raise HarnessError(
                    f"kube-apiserver exited early (code {proc.returncode if proc else '?'})\n"
                    f"--- {self.apiserver_log} tail ---\n{_read_tail(self.apiserver_log)}"
                )
            if not pending and self.ca_file.is_file():
                return
            if pending:
                req = urllib.request.Request(
                    f"{self.url}{pending[0]}", headers={"Authorization": f"Bearer {self.admin_token}"}
                )
                try:
                    with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
                        if resp.status == 200:
                            pending.pop(0)
                            continue
                        last = f"{pending[0]}: HTTP {resp.status}"
                except urllib.error.HTTPError as exc:
                    last = f"{pending[0]}: HTTP {exc.code}: {_tail(exc.read().decode(errors='replace'), 15)}"
                    exc.close()
                except OSError as exc:
                    last = f"{pending[0]}: {exc!r}"
            time.sleep(0.3)
        raise HarnessError(
            f"kube-apiserver not ready after {self.ready_timeout_s:.0f}s at {self.url}\n"
            f"last answer: {last}\n"
            f"--- {self.apiserver_log} tail ---\n{_read_tail(self.apiserver_log)}"
        )

    def readyz(self) -> tuple[int, str]:
        """GET /readyz as admin; returns (HTTP status, body)."""
        req = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context()) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")

    # ---- kubeconfigs and clients ----------------------------------------

    def _kubeconfig(self, user: str, token: str, namespace: str) -> dict[str, Any]:
        ca_data = base64.b64encode(self.ca_file.read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "drop-explainer-test",
                    "cluster": {"server": self.url, "certificate-authority-data": ca_data},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": user,
                    "context": {"cluster": "drop-explainer-test", "user": user, "namespace": namespace},
                }
            ],
            "current-context": user,
            "preferences": {},
        }

    def _write_kubeconfigs(self) -> None:
        # JSON is valid YAML, so every kubeconfig loader reads these.
        for path, user, token, ns in (
            (self.admin_kubeconfig, "admin", self.admin_token, "default"),
            (self.daemon_kubeconfig, "drop-explainer", self.daemon_token, DAEMON_NAMESPACE),
        ):
            path.write_text(json.dumps(self._kubeconfig(user, token, ns), indent=2))
            path.chmod(0o600)

    def api_client(self, kubeconfig: Path) -> ApiClient:
        """A `kubernetes` ApiClient for one of our kubeconfigs (caller closes it)."""
        from kubernetes import config

        # Loading through the kubeconfig file also proves the file is usable.
        # cast(Any): typed in new clients, untyped in old ones; work with both.
        return cast("ApiClient", cast(Any, config).new_client_from_config(config_file=str(kubeconfig)))

    def admin_api_client(self) -> ApiClient:
        return self.api_client(self.admin_kubeconfig)

    def daemon_api_client(self) -> ApiClient:
        return self.api_client(self.daemon_kubeconfig)

    @staticmethod
    def close_api_client(api: ApiClient) -> None:
        """Close a client's connection pool (untyped in some client versions)."""
        cast(Any, api).close()

    # ---- diagnostics -----------------------------------------------------

    def apiserver_log_tail(self, lines: int = 60) -> str:
        return _read_tail(self.apiserver_log, lines)

    def etcd_log_tail(self, lines: int = 60) -> str:
        return _read_tail(self.etcd_log, lines)

    def __repr__(self) -> str:
        return f"KubeApiServer(url={self.url!r}, etcd={self.etcd_url!r}, workdir={str(self.workdir)!r})"
