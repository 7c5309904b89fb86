"""A real, local Kubernetes control plane: etcd + kube-apiserver, as envtest runs them.

The tests need a real API server (watches, resourceVersions, conflicts, the
status subresource, finalizers, admission), and ``make run`` needs a cluster
when none is configured. Neither Docker nor kind exists on our machines, so this
module starts the two processes itself on free loopback ports, with certificates
it generates (a CA, a serving certificate, an admin client certificate in
``system:masters`` and a service-account signing key), waits until the server is
ready and writes a kubeconfig. ``stop()`` ends both processes and removes every
file. Should the owner die without stopping them (a crashed or killed test
run), a watchdog process that holds a pipe from the owner sees it close and
kills them, and the folders left behind are swept at the next start.

There is no controller-manager, exactly as with envtest: no garbage collection
of owned objects and namespaces never finish terminating. With a node
(:mod:`opsync.tooling.node`) there is one: then the server listens on the node's
address and serves pods (``address``, ``pods``).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opsync.tooling import binaries

DIR_PREFIX = "opsync-cp-"
LOG_TAIL_LINES = 40

# Reads one process-group id per line from its stdin, a pipe only the owner holds;
# when the pipe closes (the owner stopped or died, even by SIGKILL) it kills them all.
_WATCHDOG = """
import os, signal, sys
groups = [int(line) for line in sys.stdin]
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


class ControlPlaneError(RuntimeError):
    """The control plane did not start; the message carries the tail of the process logs."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _name(common_name: str, *organisations: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organisations]
    return x509.Name(attributes)


def _certificate(
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    *,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    issuer: x509.Name | None = None,
    usage: x509.ObjectIdentifier | None = None,
    alt_names: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    is_ca = issuer_key is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


SERVICE_IP = "10.0.0.1"
"""The ``kubernetes`` Service's cluster IP (the first of --service-cluster-ip-range): pods dial it."""


def write_pki(directory: Path, *, address: str = "127.0.0.1") -> None:
    """CA, serving and admin client certificates, and the service-account key pair.

    The serving certificate names ``address`` too, and the in-cluster names (the Service IP,
    ``kubernetes.default.svc``), so that pods of a node verify it through kube-proxy."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(ca_key, _name("opsync-control-plane-ca"))
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = _certificate(
        serving_key,
        _name("kube-apiserver"),
        issuer_key=ca_key,
        issuer=ca.subject,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt_names=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            *{x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", SERVICE_IP, address)},
        ],
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _certificate(
        admin_key,
        _name("admin", "system:masters"),
        issuer_key=ca_key,
        issuer=ca.subject,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    # Service-account tokens are RS256 by default: keep this key RSA.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": _pem_cert(ca),
        "apiserver.crt": _pem_cert(serving),
        "apiserver.key": _pem_key(serving_key),
        "admin.crt": _pem_cert(admin),
        "admin.key": _pem_key(admin_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)


def sweep_stale_dirs(parent: Path) -> list[Path]:
    """Remove control-plane folders whose owning process is gone (a crashed or killed run)."""
    removed = []
    for candidate in parent.glob(f"{DIR_PREFIX}*"):
        pid_file = candidate / "owner.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
        except PermissionError:
            continue
    return removed


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(content[-lines:]) or "(empty log)"


class ControlPlane:
    """etcd + kube-apiserver on loopback; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        bin_paths: Mapping[str, Path] | None = None,
        parent_dir: Path | None = None,
        start_timeout: float = 120.0,
        extra_apiserver_args: tuple[str, ...] = (),
        address: str = "127.0.0.1",
        pods: bool = False,
    ) -> None:
        """``address``: where kube-apiserver listens and what it advertises (a node's pods must reach
        it there). ``pods``: serve a node: ServiceAccount admission on, kubelets dialled by their
        InternalIP with the admin client certificate."""
        self._bin_paths = dict(bin_paths) if bin_paths else None
        self._parent_dir = parent_dir or _default_parent_dir()
        self.start_timeout = start_timeout
        self.extra_apiserver_args = extra_apiserver_args
        self.address = address
        self.pods = pods
        self.dir: Path | None = None
        self.url = ""
        self.etcd_url = ""
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._watchdog: subprocess.Popen[str] | None = None
        self._apiserver: Path | None = None

    # -- paths -----------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        if self.dir is None:
            raise ControlPlaneError("the control plane is not started")
        return self.dir / name

    @property
    def kubeconfig(self) -> Path:
        return self._path("kubeconfig")

    @property
    def ca_file(self) -> Path:
        return self._path("ca.crt")

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes.values()]

    # -- life cycle ------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        bins = self._bin_paths or binaries.ensure(binaries.CONTROL_PLANE)
        self._parent_dir.mkdir(parents=True, exist_ok=True)
        sweep_stale_dirs(self._parent_dir)
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=self._parent_dir))
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG], stdin=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            write_pki(self.dir, address=self.address)
            self._start_etcd(bins["etcd"])
            self._apiserver = bins["kube-apiserver"]
            self._start_apiserver(self._apiserver, free_port())
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self._path(f"{name}.log").open("wb")
        try:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self._processes[name] = process
        if self._watchdog is not None and self._watchdog.stdin is not None:
            self._watchdog.stdin.write(f"{process.pid}\n")
            self._watchdog.stdin.flush()
        return process

    def _start_etcd(self, etcd: Path) -> None:
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(etcd),
                "--name=default",
                f"--data-dir={self._path('etcd-data')}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: self._http_ok(f"{self.etcd_url}/health"))

    def _start_apiserver(self, apiserver: Path, port: int) -> None:
        self.url = f"https://{self.address}:{port}"
        self._spawn(
            "kube-apiserver",
            [
                str(apiserver),
                f"--etcd-servers={self.etcd_url}",
                f"--cert-dir={self.dir}",
                f"--tls-cert-file={self._path('apiserver.crt')}",
                f"--tls-private-key-file={self._path('apiserver.key')}",
                f"--client-ca-file={self._path('ca.crt')}",
                f"--secure-port={port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                *self._pod_args(),
                f"--service-account-issuer=https://{self.address}:{port}/",
                f"--service-account-key-file={self._path('sa.pub')}",
                f"--service-account-signing-key-file={self._path('sa.key')}",
                *self.extra_apiserver_args,
            ],
        )
        context = self.ssl_context()
        self._wait("kube-apiserver", lambda: self._http_ok(f"{self.url}/readyz", context))
        self._wait("kube-apiserver", lambda: self._http_ok(f"{self.url}/api/v1/namespaces/default", context))

    def _pod_args(self) -> list[str]:
        if not self.pods:
            return ["--disable-admission-plugins=ServiceAccount"]
        return [
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={self._path('admin.crt')}",
            f"--kubelet-client-key={self._path('admin.key')}",
        ]

    def restart_apiserver(self, *, down: float = 0.0) -> None:
        """Kill kube-apiserver (SIGKILL, as a crash), leave it down ``down`` seconds, and start it
        again on the same port with the same state; returns once it serves again."""
        process = self._processes.pop("kube-apiserver", None)
        if process is None or self._apiserver is None:
            raise ControlPlaneError("the control plane is not started")
        process.kill()
        process.wait()
        time.sleep(down)
        self._start_apiserver(self._apiserver, int(self.url.rsplit(":", 1)[1]))

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context that trusts this server and presents the admin client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(self._path("admin.crt"), self._path("admin.key"))
        return context

    @staticmethod
    def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _wait(self, name: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            for proc_name, process in self._processes.items():
                if process.poll() is not None:
                    raise ControlPlaneError(
                        f"{proc_name} exited with code {process.returncode} during start-up; "
                        f"last lines of its log:\n{_tail(self._path(f'{proc_name}.log'))}"
                    )
            if check():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{name} was not ready after {self.start_timeout:.0f}s; last lines of its log:\n"
                    f"{_tail(self._path(f'{name}.log'))}"
                )
            time.sleep(0.2)

    def _write_kubeconfig(self) -> None:
        def b64(name: str) -> str:
            return base64.b64encode(self._path(name).read_bytes()).decode()

        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "opsync-local",
            "clusters": [
                {
                    "name": "opsync-local",
                    "cluster": {"server": self.url, "certificate-authority-data": b64("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64("admin.crt"),
                        "client-key-data": b64("admin.key"),
                    },
                }
            ],
            "contexts": [{"name": "opsync-local", "context": {"cluster": "opsync-local", "user": "admin"}}],
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def stop(self, timeout: float = 15.0) -> None:
        """End kube-apiserver, then etcd (SIGTERM, then SIGKILL), and remove every file."""
        for name in ("kube-apiserver", "etcd"):
            process = self._processes.pop(name, None)
            if process is None:
                continue
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._watchdog is not None:
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()
            self._watchdog.wait(timeout)
            self._watchdog = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _default_parent_dir() -> Path:
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs keeps etcd fast; the folder is mkdtemp-private
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / "opsync"
