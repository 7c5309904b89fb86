"""A real node beside the local control plane: pods run, rollouts and garbage collection happen.

Why this module exists: the control plane of :mod:`opsync.tooling.controlplane` has no node,
so no pod ever runs there: the image, the chart's Deployment, its probes, rollouts and the
garbage collector would only be read, never run. :class:`NodeCluster` adds to it
kube-controller-manager, kube-scheduler, Debian's containerd (with runc), a kubelet, kube-proxy
and a bridge network (Debian's CNI plugins), as root, on this machine.

Layout. Everything lives under one state folder (``/dev/shm/opsync/opsync-node-*``): the
control plane's own folder, containerd's root, state, socket and config, the kubelet's root and
pod logs, the CNI configuration and its address leases. The node's address is the gateway of a
bridge (``opsync0``, 10.244.0.1/24) that exists before anything starts: kube-apiserver listens
there (pods reach it through kube-proxy at the Service IP 10.0.0.1, whose certificate names it),
the kubelet registers it as its InternalIP, and host processes the pods must reach (a local
Connect server) listen there too.

Clean-up. What a node changes on the host is recorded in the state folder: the sysctls the
kubelet, kube-proxy and the bridge plugin set (restored), the network namespaces and shim
sockets containerd creates outside it (removed), the iptables chains named ``KUBE-*``/``CNI-*``
(removed), the bridge (deleted), a cgroup tree (``/opsync-<id>`` in every hierarchy) that every
daemon, shim and container runs in (killed, then removed). The tear-down runs in a watchdog
process that holds a pipe from the owner: when the owner stops, or dies even by SIGKILL, the pipe
closes and the watchdog kills and removes everything. A host lock makes it one node at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from opsync.tooling import binaries, hostpkgs
from opsync.tooling.controlplane import ControlPlane, ControlPlaneError, free_port

logger = logging.getLogger(__name__)

DIR_PREFIX = "opsync-node-"
NODE_NAME = "opsync-node"
BRIDGE = "opsync0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
"""The bridge's address: the node's InternalIP, kube-apiserver's address, where pods reach the host."""
LOCK_FILE = Path("/run/opsync-node.lock")
NETNS_DIR = Path("/run/netns")
SHIM_SOCKET_DIR = Path("/run/containerd/s")
"""containerd 1.6 puts its shims' sockets here, whatever its state folder is."""
CONTAINER_LOG_LINKS = Path("/var/log/containers")
"""The kubelet links container logs here, whatever its root folder is."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
IPTABLES = (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore"))
OWN_CHAIN_PREFIXES = ("KUBE-", "CNI-")
SYSCTLS = (
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)
"""Host settings the kubelet, kube-proxy or the bridge plugin may change: recorded, then restored."""
LOG_TAIL_LINES = 40


class NodeError(RuntimeError):
    """The node could not start (or is not allowed here); the message says why."""


@dataclass(frozen=True, kw_only=True)
class Record:
    """What the node changed outside its folder, written before it changes it (``record.json``)."""

    cgroup: str
    """The cgroup (one name, the same in every v1 hierarchy) every node process runs under."""
    sysctls: dict[str, str]
    netns_before: list[str]
    shim_sockets_before: list[str]
    bridge_created: bool

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, path: Path) -> Record:
        return cls(**json.loads(path.read_text()))


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls(names: Sequence[str] = SYSCTLS) -> dict[str, str]:
    values = {}
    for name in names:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def restore_sysctls(values: Mapping[str, str]) -> list[str]:
    """Write back the recorded values that changed; returns the names that could not be."""
    failed = []
    for name, value in values.items():
        path = _sysctl_path(name)
        try:
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
        except OSError:
            failed.append(name)
    return failed


def _cgroup_hierarchies() -> list[Path]:
    """The writable cgroup v1 hierarchies (cpu, memory, pids, ..., name=systemd)."""
    entries = sorted(CGROUP_ROOT.iterdir()) if CGROUP_ROOT.is_dir() else []
    return [
        entry
        for entry in entries
        if entry.is_dir()
        and not entry.is_symlink()
        and (entry / "cgroup.procs").exists()
        and entry.name != "unified"
    ]


def _cgroup_dirs(cgroup: str) -> list[Path]:
    """Every folder of ``cgroup`` in every hierarchy, the v2 one of a hybrid layout too (runc makes
    its containers' cgroups there as well), deepest first."""
    dirs: list[Path] = []
    unified = [CGROUP_ROOT / "unified"] if (CGROUP_ROOT / "unified" / "cgroup.procs").exists() else []
    for hierarchy in [*_cgroup_hierarchies(), *unified]:
        top = hierarchy / cgroup
        if top.is_dir():
            dirs += [Path(root) for root, _, _ in os.walk(top)]
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def _cgroup_pids(cgroup: str) -> set[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs(cgroup):
        with contextlib.suppress(OSError):
            pids.update(int(line) for line in (directory / "cgroup.procs").read_text().split())
    return pids


def make_cgroup(cgroup: str) -> None:
    """``/<cgroup>`` (the kubelet's cgroupRoot) and ``/<cgroup>/daemons`` in every hierarchy."""
    for hierarchy in _cgroup_hierarchies():
        for path in (hierarchy / cgroup, hierarchy / cgroup / "daemons"):
            path.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # a new cpuset is empty until given cpus and mems
                for key in ("cpuset.cpus", "cpuset.mems"):
                    (path / key).write_text((path.parent / key).read_text())


def join_cgroup(cgroup: str) -> None:
    """Move the calling process into ``/<cgroup>/daemons`` of every hierarchy (a preexec_fn)."""
    pid = str(os.getpid())
    for hierarchy in _cgroup_hierarchies():
        with contextlib.suppress(OSError):
            (hierarchy / cgroup / "daemons" / "cgroup.procs").write_text(pid)


def _mounts_under(prefixes: Sequence[str]) -> list[str]:
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _unmount(points: Sequence[str]) -> None:
    for point in points:
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def own_iptables_rules(saved: str) -> str:
    """An ``iptables-restore --noflush`` script that removes the ``KUBE-*``/``CNI-*`` chains of an
    ``iptables-save`` output and the rules of other chains that jump to them; '' when there are none."""
    script: list[str] = []
    table = ""
    deletes: list[str] = []
    chains: list[str] = []

    def flush_table() -> None:
        if table and (deletes or chains):
            script.append(f"*{table}")
            script.extend(deletes)
            script.extend(f"-F {chain}" for chain in chains)
            script.extend(f"-X {chain}" for chain in chains)
            script.append("COMMIT")

    for line in saved.splitlines():
        if line.startswith("*"):
            table, deletes, chains = line[1:].strip(), [], []
        elif line.startswith("COMMIT"):
            flush_table()
            table = ""
        elif line.startswith(":"):
            chain = line[1:].split()[0]
            if chain.startswith(OWN_CHAIN_PREFIXES):
                chains.append(chain)
        elif line.startswith("-A "):
            words = line.split()
            chain = words[1]
            target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
            if not chain.startswith(OWN_CHAIN_PREFIXES) and target.startswith(OWN_CHAIN_PREFIXES):
                deletes.append("-D" + line[2:])
    return "\n".join(script) + "\n" if script else ""


def remove_iptables_rules() -> None:
    for save, restore in IPTABLES:
        if shutil.which(save) is None:
            continue
        saved = subprocess.run([save], capture_output=True, text=True, check=False).stdout
        script = own_iptables_rules(saved)
        if script:
            subprocess.run([restore, "--noflush"], input=script, capture_output=True, text=True, check=False)


def teardown(state: Path) -> list[str]:
    """Undo everything a node did, from its record; safe to run twice. Returns what it could not undo."""
    problems: list[str] = []
    record_file = state / "record.json"
    record = Record.load(record_file) if record_file.is_file() else None
    if record is not None:
        # Every node process (daemons, shims, containers) is in the cgroup: kill until none is left.
        for _ in range(100):
            pids = _cgroup_pids(record.cgroup) - {os.getpid()}
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        else:
            problems.append(f"processes left in cgroup {record.cgroup}")
    # Processes started before they joined the cgroup, by their command line naming the state folder.
    for pid in _processes_naming(str(state)):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    new_netns: list[str] = []
    if record is not None:
        new_netns = [
            str(NETNS_DIR / name)
            for name in _listdir(NETNS_DIR)
            if name not in record.netns_before and name.startswith("cni-")
        ]
    _unmount([*_mounts_under([str(state)]), *new_netns])
    for netns in new_netns:
        with contextlib.suppress(OSError):
            os.unlink(netns)
    if record is not None:
        for name in _listdir(SHIM_SOCKET_DIR):
            if name not in record.shim_sockets_before:
                with contextlib.suppress(OSError):
                    (SHIM_SOCKET_DIR / name).unlink()
        for directory in _cgroup_dirs(record.cgroup):
            with contextlib.suppress(OSError):
                directory.rmdir()
        if _cgroup_dirs(record.cgroup):
            problems.append(f"cgroup {record.cgroup} could not be removed")
    for link in _listdir(CONTAINER_LOG_LINKS):
        path = CONTAINER_LOG_LINKS / link
        with contextlib.suppress(OSError):
            if os.readlink(path).startswith(str(state)):
                path.unlink()
    remove_iptables_rules()
    if record is not None and record.bridge_created:
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    if record is not None:
        problems += [f"sysctl {name} not restored" for name in restore_sysctls(record.sysctls)]
    shutil.rmtree(state, ignore_errors=True)
    if state.exists():
        problems.append(f"{state} not removed")
    return problems


def leftovers(state: Path, cgroup: str) -> list[str]:
    """What a torn-down node left on the host (nothing, when the tear-down worked)."""
    found = [str(path) for path in _cgroup_dirs(cgroup)]
    found += _mounts_under([str(state)])
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode == 0:
        found.append(f"interface {BRIDGE}")
    for save, _ in IPTABLES:
        if shutil.which(save) and own_iptables_rules(
            subprocess.run([save], capture_output=True, text=True, check=False).stdout
        ):
            found.append(f"{save}: KUBE-/CNI- chains")
    return found


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in _listdir(Path("/proc")):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
    return found


def sweep_stale(parent: Path) -> list[Path]:
    """Tear down node folders whose owner and watchdog are gone (their lock is free)."""
    removed = []
    for candidate in sorted(parent.glob(f"{DIR_PREFIX}*")):
        try:
            pid = int((candidate / "watchdog.pid").read_text())
            os.kill(pid, 0)
            continue
        except (OSError, ValueError):
            pass
        teardown(candidate)
        removed.append(candidate)
    return removed


def _watchdog_main(state: Path) -> None:
    """Block until the owner's pipe (stdin) closes, then tear the node down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdin.read()
    problems = teardown(state)
    for problem in problems:
        sys.stderr.write(f"opsync node tear-down: {problem}\n")


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(content[-lines:]) or "(empty log)"


def check_host() -> None:
    """Raise NodeError unless this process may run a node (root, cgroup v1 or v2 hierarchies)."""
    if os.geteuid() != 0:
        raise NodeError("a node (--node) runs containerd and a kubelet: it needs root")
    if not _cgroup_hierarchies() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        raise NodeError(f"a node needs cgroups mounted under {CGROUP_ROOT}")
    if not _cgroup_hierarchies():
        raise NodeError(
            "this node set-up supports cgroup v1 hierarchies (the kubelet's cgroupfs driver) only"
        )


@dataclass(kw_only=True)
class NodeCluster:
    """Control plane + node. ``images``: docker-archives imported into containerd before the
    kubelet starts (the pause image is always imported)."""

    images: Sequence[Path] = ()
    parent_dir: Path | None = None
    start_timeout: float = 180.0
    bin_paths: Mapping[str, Path] | None = None
    dir: Path | None = field(default=None, init=False)
    plane: ControlPlane | None = field(default=None, init=False)
    timings: dict[str, float] = field(default_factory=dict, init=False)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _lock_fd: int | None = field(default=None, init=False)
    _cgroup: str = field(default="", init=False)

    # -- paths -----------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        if self.dir is None:
            raise NodeError("the node is not started")
        return self.dir / name

    @property
    def kubeconfig(self) -> Path:
        return self._plane.kubeconfig

    @property
    def _plane(self) -> ControlPlane:
        if self.plane is None:
            raise NodeError("the node is not started")
        return self.plane

    @property
    def cgroup(self) -> str:
        """The cgroup (in every hierarchy) every node process runs under."""
        return self._cgroup

    @property
    def containerd_socket(self) -> Path:
        return self.path("containerd/containerd.sock")

    @property
    def node_ip(self) -> str:
        return NODE_IP

    # -- life cycle ------------------------------------------------------------------------------

    def __enter__(self) -> Self:
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
        check_host()
        hostpkgs.ensure(hostpkgs.NODE, purpose="a node (--node)")
        bins = dict(self.bin_paths) if self.bin_paths else binaries.ensure(binaries.NODE)
        from opsync.tooling import images

        hostpkgs.ensure(hostpkgs.IMAGE, purpose="the node's pause image")
        pause = images.pause_image()
        parent = self.parent_dir or _default_parent_dir()
        parent.mkdir(parents=True, exist_ok=True)
        self._take_lock(parent)
        started = time.monotonic()
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=parent))
            self._cgroup = f"opsync-{self.dir.name.removeprefix(DIR_PREFIX)}"
            self._start_watchdog()
            self._prepare_host()
            self.plane = ControlPlane(
                bin_paths=bins,
                parent_dir=self.dir,
                start_timeout=self.start_timeout,
                address=NODE_IP,
                pods=True,
            )
            self.plane.start()
            self.timings["control plane"] = time.monotonic() - started
            self._start_containerd(bins, pause.ref)
            for archive in (pause.archive, *self.images):
                self.import_image(archive)
            self.timings["containerd + images"] = time.monotonic() - started
            self._start_controllers(bins)
            self._start_kubelet(bins["kubelet"])
            self._start_kube_proxy(bins["kube-proxy"])
            self._wait("node Ready", self._node_ready)
            self._wait("Service 10.0.0.1 in iptables", self._service_routed)
            self._wait(
                "ServiceAccount default",
                lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            )
            self.timings["node Ready"] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise

    def _take_lock(self, parent: Path) -> None:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A previous owner's watchdog may still be tearing down: give it a moment.
            deadline = time.monotonic() + 60
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        os.close(fd)
                        raise NodeError(
                            f"another opsync node runs on this machine ({LOCK_FILE} is locked); one at a time"
                        ) from None
                    time.sleep(0.5)
        self._lock_fd = fd
        sweep_stale(parent)

    def _start_watchdog(self) -> None:
        # The watchdog shares the lock (same open file), so it is held until the tear-down is over.
        assert self._lock_fd is not None
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from opsync.tooling.node import _watchdog_main; "
                "from pathlib import Path; _watchdog_main(Path(sys.argv[1]))",
                str(self.dir),
            ],
            stdin=subprocess.PIPE,
            # stderr inherited: what the tear-down could not undo is said where the owner ran.
            start_new_session=True,
            pass_fds=(self._lock_fd,),
        )
        self.path("watchdog.pid").write_text(str(self._watchdog.pid))
        self.path("owner.pid").write_text(str(os.getpid()))

    def _prepare_host(self) -> None:
        bridge_exists = (
            subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode == 0
        )
        record = Record(
            cgroup=self._cgroup,
            sysctls=read_sysctls(),
            netns_before=_listdir(NETNS_DIR),
            shim_sockets_before=_listdir(SHIM_SOCKET_DIR),
            bridge_created=not bridge_exists,
        )
        record.save(self.path("record.json"))
        make_cgroup(self._cgroup)
        if not bridge_exists:
            for argv in (
                ["ip", "link", "add", BRIDGE, "type", "bridge"],
                ["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE],
                ["ip", "link", "set", BRIDGE, "up"],
            ):
                self._run(argv)
        cni = self.path("cni/net.d")
        cni.mkdir(parents=True)
        conf = {
            "cniVersion": "0.4.0",
            "name": "opsync",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.path("cni/ipam")),
                    },
                }
            ],
        }
        (cni / "10-opsync.conflist").write_text(json.dumps(conf, indent=2))

    @staticmethod
    def _run(argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise NodeError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.path(f"{name}.log").open("wb")
        cgroup = self._cgroup
        try:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=lambda: join_cgroup(cgroup),
            )
        finally:
            log.close()
        self._processes[name] = process
        return process

    def _start_containerd(self, bins: Mapping[str, Path], sandbox_image: str) -> None:
        del bins
        root = self.path("containerd")
        config = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
plugin_dir = ""
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{root / "containerd.sock.ttrpc"}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # This VM's bounding set lacks CAP_SYS_RESOURCE: the sandbox's oom_score_adj of -998 kills runc init.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which("runc") or "/usr/sbin/runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{hostpkgs.CNI_BIN_DIR}"
    conf_dir = "{self.path("cni/net.d")}"
"""
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.toml").write_text(config)
        containerd = shutil.which("containerd") or "/usr/bin/containerd"
        self._spawn("containerd", [containerd, "--config", str(root / "config.toml"), "--log-level", "warn"])
        self._wait("containerd", lambda: self._ctr("version").returncode == 0)

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def import_image(self, archive: Path) -> None:
        """Load a docker-archive into the node's containerd (namespace k8s.io)."""
        import_into(self.containerd_socket, archive)

    def _start_controllers(self, bins: Mapping[str, Path]) -> None:
        plane = self._plane
        kubeconfig = str(plane.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--root-ca-file={plane.ca_file}",
                f"--service-account-private-key-file={plane.dir / 'sa.key' if plane.dir else ''}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bins["kube-scheduler"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--v=1",
            ],
        )

    def _start_kubelet(self, kubelet: Path) -> None:
        plane = self._plane
        root = self.path("kubelet")
        root.mkdir()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self._cgroup}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.path("pod-logs")),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(plane.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
            "syncFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
        }
        (root / "config.yaml").write_text(json.dumps(config, indent=2))
        self._spawn(
            "kubelet",
            [
                str(kubelet),
                f"--config={root / 'config.yaml'}",
                f"--kubeconfig={plane.kubeconfig}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self, kube_proxy: Path) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self._plane.kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "oomScoreAdj": 0,
            # Leave the host's conntrack table settings alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"localhostNodePorts": False, "syncPeriod": "5s", "minSyncPeriod": "0s"},
            "nodePortAddresses": [f"{NODE_IP}/32"],
        }
        path = self.path("kube-proxy.yaml")
        path.write_text(json.dumps(config, indent=2))
        self._spawn("kube-proxy", [str(kube_proxy), f"--config={path}", "--v=1"])

    # -- checks ----------------------------------------------------------------------------------

    def _get(self, api_path: str) -> dict[str, Any] | None:
        plane = self._plane
        try:
            with urllib.request.urlopen(  # noqa: S310
                f"{plane.url}{api_path}", context=plane.ssl_context(), timeout=5
            ) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body
        except (OSError, urllib.error.URLError, ValueError, ssl.SSLError):
            return None

    def _node_ready(self) -> bool:
        node = self._get(f"/api/v1/nodes/{NODE_NAME}")
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    @staticmethod
    def _service_routed() -> bool:
        saved = subprocess.run(
            ["iptables-save", "-t", "nat"], capture_output=True, text=True, check=False
        ).stdout
        return "10.0.0.1/32" in saved and "KUBE-SVC-" in saved

    def _wait(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise NodeError(
                        f"{name} exited with code {process.returncode} while waiting for {what}; "
                        f"last lines of its log:\n{_tail(self.path(f'{name}.log'))}"
                    )
            if check():
                return
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {name}.log\n{_tail(self.path(f'{name}.log'), 15)}" for name in self._processes
                )
                raise NodeError(f"{what}: not after {self.start_timeout:.0f}s\n{logs}")
            time.sleep(0.3)

    def logs(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.path(f"{name}.log"), lines)

    def pid_of(self, name: str) -> int:
        return self._processes[name].pid

    # -- stop --------------------------------------------------------------------------------------

    def stop(self, timeout: float = 120.0) -> None:
        """Tear everything down: the watchdog kills every node process (no graceful stops: nothing
        here is worth keeping), the control plane goes with it, then the host is restored."""
        if self._watchdog is not None:
            # Closing the pipe makes the watchdog tear down (it holds the lock until it is done).
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()
            self._watchdog.wait(timeout)
            self._watchdog = None
        elif self.dir is not None:
            teardown(self.dir)
        if self.plane is not None:
            with contextlib.suppress(ControlPlaneError):
                self.plane.stop(timeout=2.0)
            self.plane = None
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
        self._processes.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.dir = None


def running_sockets(parent: Path | None = None) -> list[Path]:
    """The containerd sockets of the nodes running on this machine (for ``make image``)."""
    found = []
    for candidate in sorted((parent or _default_parent_dir()).glob(f"{DIR_PREFIX}*")):
        socket = candidate / "containerd" / "containerd.sock"
        try:
            os.kill(int((candidate / "owner.pid").read_text()), 0)
        except (OSError, ValueError):
            continue
        if socket.is_socket():
            found.append(socket)
    return found


def import_into(socket: Path, archive: Path) -> None:
    """Load a docker-archive into the containerd listening on ``socket`` (namespace k8s.io)."""
    result = subprocess.run(
        ["ctr", "--address", str(socket), "--namespace", "k8s.io", "images", "import", str(archive)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise NodeError(f"ctr images import {archive} failed: {(result.stdout + result.stderr).strip()}")


def _default_parent_dir() -> Path:
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs; the folder is mkdtemp-private
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / "opsync"
