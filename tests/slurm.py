"""A real Slurm over the namespace hosts of :mod:`hosts`: munged, slurmctld, one slurmd per host.

Debian's own daemons, configured in a private directory under ``/run``
(seen by every host, as a shared file system would be) and started and
stopped here by pid; ``SLURM_CONF`` points every Slurm command at it.  The
controller runs on this machine, as on a login node, and each ``slurmd``
inside its host's namespaces, so a job's tasks run on the hosts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hosts import Hosts

DAEMONS = ("munged", "slurmctld", "slurmd", "salloc", "scontrol", "sinfo")


def unavailable() -> str:
    """Why a Slurm cannot be started here ("" if it can)."""
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian: slurmctld slurmd slurm-client munge)"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONF = """\
ClusterName=mxnb
SlurmctldHost={head}({gateway})
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={dir}/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool/%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdTimeout=30
{nodes}
PartitionName=mxnb Nodes={names} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    dir: str
    conf: str
    #: the slurmd on each host: they stay while jobs come and go
    daemons: list[int]

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": self.conf}

    def log(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(Path(self.dir).glob("*.log"))
        )


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


@contextmanager
def slurm_on(hosts: Hosts, cpus: int = 2) -> Iterator[Slurm]:
    """munged, slurmctld and a slurmd per host; all stopped (by pid) after."""
    d = tempfile.mkdtemp(prefix="mxnb-slurm-", dir="/run")
    for sub in ("state", "spool"):
        os.makedirs(os.path.join(d, sub))
    for h in hosts.hosts:
        os.makedirs(os.path.join(d, "spool", h.name))
    key = os.path.join(d, "munge.key")
    Path(key).write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    conf = os.path.join(d, "slurm.conf")
    nodes = "\n".join(
        f"NodeName={h.name} NodeAddr={h.ip} CPUs={cpus} State=UNKNOWN" for h in hosts.hosts
    )
    Path(conf).write_text(
        CONF.format(
            head=socket.gethostname(),
            gateway=hosts.gateway,
            ctl_port=_free_port(),
            d_port=_free_port(),
            dir=d,
            nodes=nodes,
            names=",".join(h.name for h in hosts.hosts),
        )
    )
    env = {**os.environ, "SLURM_CONF": conf}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_start(
            ["munged", "-F", "--force", f"--key-file={key}", f"--socket={d}/munge.sock",
             f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
             f"--seed-file={d}/munged.seed"], env))  # fmt: skip
        deadline = time.monotonic() + 10
        while not os.path.exists(f"{d}/munge.sock") and time.monotonic() < deadline:
            time.sleep(0.05)
        procs.append(_start(["slurmctld", "-D", "-i", "-f", conf], env))
        for h in hosts.hosts:
            procs.append(_start(
                ["nsenter", "-t", str(h.pid), "--net", "--uts", "--mount", "--",
                 "slurmd", "-D", "-N", h.name, "-f", conf], env))  # fmt: skip
        slurm = Slurm(dir=d, conf=conf, daemons=[p.pid for p in procs[2:]])
        deadline = time.monotonic() + 40
        states = ""
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, env=env
            )
            states = out.stdout + out.stderr
            if out.returncode == 0 and states.count("idle") == len(hosts.hosts):
                break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"Slurm did not come up: {states}\n{slurm.log()}")
        yield slurm
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(d, ignore_errors=True)
