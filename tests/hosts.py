"""Several "hosts" on this machine: one Linux network namespace per host.

Each host has its own IP on a private bridge, its own hostname (PRRTE tells
nodes apart by hostname) and its own ``/tmp`` (otherwise a Unix socket or a
file one host makes under ``/tmp`` is reachable from another, and a
single-host shortcut would pass by accident).  Paths outside ``/tmp`` are
shared, as on a cluster with a shared home; the project and its environment
are kept at the same path when they live under ``/tmp``.

Open MPI reaches the hosts the way it reaches real ones over ssh: through
``PRTE_MCA_plm_ssh_agent``, here a script that enters the host's namespaces
with a clean environment (ssh forwards none either).

Needs root and a kernel that allows namespaces; :func:`unavailable` says why
not, so tests skip with the reason instead of passing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
#: The bridges' subnets are 10.77.K.0/24, K the first one free; this host is .1.
NET = "10.77"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, stdin=subprocess.DEVNULL)


def unavailable() -> str:
    """Why namespace hosts cannot be built here ("" if they can)."""
    if sys.platform != "linux":
        return "several hosts are simulated with Linux network namespaces"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: iproute2, util-linux)"
    probe = subprocess.run(
        ["unshare", "--net", "--uts", "--mount", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"this kernel refuses namespaces: {probe.stderr.strip()}"
    return ""


@dataclass
class Host:
    name: str
    ip: str
    netns: str
    holder: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.holder is not None
        return self.holder.pid

    def run(self, *cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run a command on this host (its namespaces, a clean environment)."""
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "--net", "--uts", "--mount", "--", *cmd],
            capture_output=True,
            text=True,
            **kw,  # type: ignore[arg-type]
        )


@dataclass
class Hosts:
    """The built hosts and the agent script Open MPI reaches them with."""

    hosts: list[Host]
    agent: str
    workdir: str
    #: this host's address on the hosts' bridge
    gateway: str = ""

    def hostfile(self, slots: int = 2, names: list[str] | None = None) -> str:
        """An Open MPI hostfile listing the hosts (by address) with ``slots`` each."""
        path = os.path.join(self.workdir, f"hostfile-{slots}-{len(names or self.hosts)}")
        lines = [f"{h} slots={slots}" for h in (names or [h.ip for h in self.hosts])]
        Path(path).write_text("# mxnb test hosts\n" + "\n".join(lines) + "\n")
        return path

    def env(self) -> dict[str, str]:
        return {"PRTE_MCA_plm_ssh_agent": self.agent}

    def wait_empty(self, timeout: float = 15.0, keep: Iterable[int] = ()) -> dict[str, list[int]]:
        """Wait until nothing runs on any host but ``keep`` (daemons of the test's own);
        returns what is left, per host that still has something."""
        deadline = time.monotonic() + timeout
        left = self.processes(keep)
        while any(left.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.processes(keep)
        return {h: pids for h, pids in left.items() if pids}

    def processes(self, keep: Iterable[int] = ()) -> dict[str, list[int]]:
        """Per host, the processes in its network namespace (the holder and ``keep`` excepted)."""
        kept = set(keep)
        inode = {}
        for h in self.hosts:
            inode[os.stat(f"/proc/{h.pid}/ns/net").st_ino] = h
        found: dict[str, list[int]] = {h.name: [] for h in self.hosts}
        for p in psutil.process_iter():
            try:
                ino = os.stat(f"/proc/{p.pid}/ns/net").st_ino
            except OSError:
                continue
            h = inode.get(ino)
            if h is not None and p.pid != h.pid and p.pid not in kept:
                found[h.name].append(p.pid)
        return found


def _kept_paths() -> list[str]:
    """Paths under /tmp every host must see at the same place (the project, its venv)."""
    wanted = {str(ROOT), sys.prefix, sys.base_prefix}
    return sorted(p for p in wanted if p.startswith("/tmp/"))


def _holder_script(name: str, hidden: list[str]) -> str:
    keep = _kept_paths()
    lines = ["set -e", f"hostname {name}", "mkdir -p /run/mxnb-keep"]
    for i, p in enumerate(keep):
        lines += [f"mkdir -p /run/mxnb-keep/{i}", f"mount --bind {p} /run/mxnb-keep/{i}"]
    lines += ["mount -t tmpfs -o mode=1777 tmpfs /tmp"]
    for i, p in enumerate(keep):
        lines += [f"mkdir -p {p}", f"mount --move /run/mxnb-keep/{i} {p}"]
    for p in hidden:  # a host where this environment's path does not exist
        lines += [f"mount -t tmpfs tmpfs {p}"]
    lines += ["echo ready", "exec sleep 100000"]
    return "\n".join(lines)


AGENT = """#!/bin/sh
# ssh stand-in for Open MPI: HOST CMD... runs CMD on the namespace host HOST
while [ $# -gt 0 ]; do  # ssh's own options (Open MPI passes plm_ssh_args)
  case "$1" in -o|-p|-l|-i) shift 2;; -*) shift;; *) break;; esac
done
host="$1"; shift
case "$host" in
{cases}
  *) echo "ssh: Could not resolve hostname $host: Name or service not known" >&2; exit 255;;
esac
exec nsenter -t "$pid" --net --uts --mount -- env -i PATH=/usr/bin:/bin HOME=/root \\
  /bin/sh -c "$*"
"""


def _free_subnet() -> int:
    used = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    return next(k for k in range(256) if f"{NET}.{k}.1" not in used)


@contextmanager
def namespace_hosts(count: int = 2, hidden: dict[int, list[str]] | None = None) -> Iterator[Hosts]:
    """Build ``count`` hosts (10.77.K.2, .3, ...); tear everything down after.

    ``hidden``: per host index, paths that do not exist on that host.
    """
    k = _free_subnet()
    subnet = f"{NET}.{k}"
    tag = f"mx{os.getpid()}k{k}"
    bridge = f"{tag}br"
    workdir = tempfile.mkdtemp(prefix="mxnb-hosts-", dir="/run")
    hosts: list[Host] = []
    made_bridge = False
    try:
        _run("ip", "link", "add", bridge, "type", "bridge")
        made_bridge = True
        _run("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        for i in range(count):
            h = Host(name=f"node{i + 1}", ip=f"{subnet}.{i + 2}", netns=f"{tag}h{i}")
            hosts.append(h)
            veth = f"{tag}v{i}"
            _run("ip", "netns", "add", h.netns)
            _run(
                "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns
            )
            _run("ip", "link", "set", veth, "master", bridge, "up")
            nsx = ("ip", "netns", "exec", h.netns)
            _run(*nsx, "ip", "addr", "add", f"{h.ip}/24", "dev", "eth0")
            _run(*nsx, "ip", "link", "set", "eth0", "up")
            _run(*nsx, "ip", "link", "set", "lo", "up")
            h.holder = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{h.netns}",
                    "unshare",
                    "--uts",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    _holder_script(h.name, (hidden or {}).get(i, [])),
                ],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            assert h.holder.stdout is not None
            if h.holder.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"host {h.name} did not start")
        cases = "\n".join(f"  {h.ip}|{h.name}) pid={h.pid};;" for h in hosts)
        agent = os.path.join(workdir, "agent")
        Path(agent).write_text(AGENT.format(cases=cases))
        os.chmod(agent, 0o755)
        yield Hosts(hosts=hosts, agent=agent, workdir=workdir, gateway=f"{subnet}.1")
    finally:
        for h in hosts:
            if h.holder is not None:
                # whatever still runs in the host dies with it
                for pid in Hosts(hosts=[h], agent="", workdir="").processes()[h.name]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                h.holder.kill()
                h.holder.wait()
            subprocess.run(["ip", "netns", "del", h.netns], capture_output=True)
        if made_bridge:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
