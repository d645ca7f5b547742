"""A real single-node SLURM (munge + slurmctld + slurmd) on this machine, for tests and demos.

:func:`start_local_slurm` writes a private ``slurm.conf`` into a temporary directory, starts
``munged``, ``slurmctld`` and ``slurmd`` as plain foreground child processes (no systemd, no
cgroups) on free loopback ports, and waits until the one node, ``localhost``, is idle. Clients
(``sbatch``, ``squeue``, dask-jobqueue) find it through ``SLURM_CONF``: :meth:`LocalSlurm.env`
gives the variables, :meth:`LocalSlurm.activated` sets them in ``os.environ`` for a block.

Example::

    with start_local_slurm() as slurm, slurm.activated():
        subprocess.run(["sbatch", "--wrap", "hostname"], check=True)

Notes:
    * Needs root (``slurmd`` starts job steps as the submitting user) and the Debian packages
      ``slurmctld slurmd slurm-client munge``; :func:`slurm_missing` says what is absent.
    * ``SlurmdParameters=config_overrides`` lets ``cpus`` exceed the real core count.
    * Jobs run with the submitting process's environment and working directory; give dask-jobqueue
      a ``log_directory`` so ``slurm-<id>.out`` files do not land in the working directory.
    * :meth:`LocalSlurm.stop` cancels every job, waits for it, runs ``scontrol shutdown``, then
      signals only processes it started and processes of its own jobs (found through the private
      ``SLURM_CONF`` in their environment), and removes the directory. An :mod:`atexit` hook stops
      every instance still running when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["LocalSlurm", "SlurmError", "slurm_missing", "start_local_slurm"]

_BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sinfo", "squeue", "scancel", "scontrol")
_HOST = "127.0.0.1"
_NODE = "localhost"
_LOG_TAIL_LINES = 30


class SlurmError(RuntimeError):
    """The local SLURM could not be started or used."""


def slurm_missing() -> str | None:
    """Say why a local SLURM cannot be started here, or None when it can.

    Returns:
        None if every needed program is on ``PATH`` (``/usr/sbin`` included) and the process
        runs as root; else a one-line reason naming what is missing.
    """
    path = _search_path()
    absent = [b for b in _BINARIES if shutil.which(b, path=path) is None]
    if absent:
        return (
            f"{', '.join(absent)} not found; "
            "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
        )
    if os.geteuid() != 0:
        return "a local SLURM needs root (slurmd starts jobs as the submitting user)"
    return None


def _search_path() -> str:
    """``PATH`` with the sbin directories the daemons live in."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    extra = [d for d in ("/usr/sbin", "/sbin", "/usr/local/sbin") if d not in parts]
    return os.pathsep.join([*parts, *extra])


def _which(name: str) -> str:
    found = shutil.which(name, path=_search_path())
    if found is None:
        raise SlurmError(f"{name} not found ({slurm_missing()})")
    return found


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child is "alive" for kill(0): reap it if it is ours
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _real_memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4096


def render_slurm_conf(
    *,
    base: Path,
    cpus: int,
    mem_mb: int,
    partition: str,
    ctld_port: int,
    slurmd_port: int,
    cluster_name: str = "localcluster",
) -> str:
    """The ``slurm.conf`` of a single-node cluster whose files all live under ``base``.

    Args:
        base: Directory holding state, logs, pid files and the munge socket.
        cpus: CPUs the node offers (may exceed the real count).
        mem_mb: Memory the node offers, MB.
        partition: Name of the one (default) partition.
        ctld_port: TCP port of slurmctld.
        slurmd_port: TCP port of slurmd.
        cluster_name: ``ClusterName`` (jobs see it as ``SLURM_CLUSTER_NAME``).

    Returns:
        The file's text.
    """
    return f"""\
# single-node throw-away cluster written by stac2cube.testing.slurm
ClusterName={cluster_name}
SlurmctldHost={_NODE}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge/munge.socket
StateSaveLocation={base}/state/ctld
SlurmdSpoolDir={base}/state/d
SlurmctldPidFile={base}/run/slurmctld.pid
SlurmdPidFile={base}/run/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=60
NodeName={_NODE} NodeHostname={_NODE} NodeAddr={_HOST} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


_LIVE: dict[int, LocalSlurm] = {}
_LIVE_LOCK = threading.Lock()


@dataclass
class LocalSlurm:
    """A running single-node SLURM.

    Attributes:
        base_dir: Temporary directory with ``etc/slurm.conf``, state, logs and the munge socket.
        partition: The one partition (the default for jobs).
        cpus: CPUs of the node.
        mem_mb: Memory of the node, MB.
        cluster_name: The cluster's name (``SLURM_CLUSTER_NAME`` in jobs).
        start_seconds: Seconds from the call of :func:`start_local_slurm` to an idle node.
    """

    base_dir: Path
    partition: str
    cpus: int
    mem_mb: int
    cluster_name: str
    start_seconds: float = 0.0
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def conf(self) -> Path:
        """Path of the cluster's ``slurm.conf``."""
        return self.base_dir / "etc" / "slurm.conf"

    @property
    def log_dir(self) -> Path:
        """Directory of the daemons' logs."""
        return self.base_dir / "log"

    def env(self) -> dict[str, str]:
        """Environment variables a client (sbatch, dask-jobqueue) needs: ``SLURM_CONF``, ``PATH``."""
        return {"SLURM_CONF": str(self.conf), "PATH": _search_path()}

    @contextlib.contextmanager
    def activated(self) -> Iterator[LocalSlurm]:
        """Set :meth:`env` in ``os.environ`` for the block, restoring the old values after."""
        saved = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())
        try:
            yield self
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command (``squeue``, ``sbatch`` ...) against this cluster."""
        return subprocess.run(
            [_which(args[0]), *args[1:]],
            env={**os.environ, **self.env()},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def job_ids(self) -> list[str]:
        """Ids of the jobs the controller knows (pending, running, completing)."""
        out = self.run("squeue", "-h", "-o", "%i")
        return out.stdout.split() if out.returncode == 0 else []

    def node_state(self) -> str:
        """State of the node as ``sinfo`` reports it (``idle``, ``mixed``, ...), or ``""``."""
        out = self.run("sinfo", "-h", "-n", _NODE, "-o", "%T", timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    def logs(self) -> str:
        """The tails of the daemons' logs, for error messages."""
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            path = self.log_dir / name
            if path.exists():
                parts.append(f"--- last lines of {path} ---\n{_tail(path)}")
        return "\n".join(parts)

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel every job, shut the daemons down, kill leftovers of our own, remove the directory.

        Idempotent, and safe on a half-started instance.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._cancel_jobs()
                ctld = self._procs.get("slurmctld")
                if ctld is not None and ctld.poll() is None:
                    self.run("scontrol", "shutdown", timeout=15)
                self._terminate("slurmd", wait=10.0)  # scontrol shutdown stops both
                self._terminate("slurmctld", wait=10.0)
                self._terminate("munged", wait=0.0)
                self._kill_job_leftovers()
            finally:
                shutil.rmtree(self.base_dir, ignore_errors=True)
                with _LIVE_LOCK:
                    _LIVE.pop(id(self), None)

    def _cancel_jobs(self, timeout: float = 30.0) -> None:
        ctld = self._procs.get("slurmctld")
        if ctld is None or ctld.poll() is not None:
            return
        jobs = self.job_ids()
        if not jobs:
            return
        self.run("scancel", *jobs)
        deadline = time.monotonic() + timeout
        while self.job_ids() and time.monotonic() < deadline:
            time.sleep(0.2)

    def _terminate(self, name: str, wait: float) -> None:
        """Wait ``wait`` s for the daemon ``name`` to exit, then SIGTERM, then SIGKILL it."""
        proc = self._procs.get(name)
        if proc is None:
            return
        for sig, seconds in ((None, wait), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            try:
                proc.wait(seconds)
                return
            except subprocess.TimeoutExpired:
                continue

    def _kill_job_leftovers(self) -> None:
        """Kill processes of our jobs that outlived slurmd (they carry our ``SLURM_CONF``)."""
        marker = f"SLURM_CONF={self.conf}".encode()
        own = {os.getpid(), os.getppid()}
        leftovers = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in own:
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ and any(v.startswith(b"SLURM_JOB_ID=") for v in environ):
                leftovers.append(int(entry.name))
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        if not _wait_gone(leftovers, 5.0):
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone(leftovers, 5.0)

    def __enter__(self) -> LocalSlurm:
        """Return self; the cluster is already running."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop everything."""
        self.stop()

    # -- start-up -----------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.out", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env={**os.environ, **self.env()},
                start_new_session=True,
            )
        self._procs[name] = proc
        return proc

    def _start_munge(self, deadline: float) -> None:
        munge_dir = self.base_dir / "munge"
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = munge_dir / "munge.socket"
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--log-file={self.log_dir / 'munged.log'}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
        )
        while True:  # the socket answers: a credential round-trip works
            self._check_alive("munged")
            if sock.exists():
                enc = subprocess.run(
                    [_which("munge"), "-n", "-S", str(sock)], capture_output=True, check=False
                )
                if enc.returncode == 0:
                    dec = subprocess.run(
                        [_which("unmunge"), "-S", str(sock)],
                        input=enc.stdout,
                        capture_output=True,
                        check=False,
                    )
                    if dec.returncode == 0:
                        return
            if time.monotonic() > deadline:
                raise SlurmError(f"munged did not answer in time\n{self.logs()}")
            time.sleep(0.05)

    def _check_alive(self, name: str) -> None:
        proc = self._procs[name]
        if proc.poll() is not None:
            raise SlurmError(f"{name} exited with status {proc.returncode}\n{self.logs()}")

    def _start_daemons(self, deadline: float) -> None:
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", _NODE, "-f", str(self.conf)])
        state = ""
        while True:
            self._check_alive("slurmctld")
            self._check_alive("slurmd")
            state = self.node_state()
            if state == "idle":
                return
            if time.monotonic() > deadline:
                raise SlurmError(f"node not idle in time (sinfo state {state!r})\n{self.logs()}")
            time.sleep(0.1)


def start_local_slurm(
    *,
    cpus: int | None = None,
    mem_mb: int | None = None,
    partition: str = "debug",
    cluster_name: str = "localcluster",
    timeout: float = 60.0,
) -> LocalSlurm:
    """Start munged, slurmctld and slurmd on 127.0.0.1 and wait until the node is idle.

    Args:
        cpus: CPUs the node offers; default ``os.cpu_count()``. May exceed the real count.
        mem_mb: Memory the node offers, MB; default 90% of the machine's memory.
        partition: Name of the one partition.
        cluster_name: ``ClusterName`` of the cluster (``SLURM_CLUSTER_NAME`` inside jobs).
        timeout: Seconds allowed for the whole start-up.

    Returns:
        A running :class:`LocalSlurm`; stop it with ``stop()`` or use it as a context manager.

    Raises:
        SlurmError: If a program is missing, not root, or a daemon fails; the message carries
            the tails of the daemons' logs. Whatever was started is stopped again.
    """
    missing = slurm_missing()
    if missing:
        raise SlurmError(missing)
    t0 = time.monotonic()
    deadline = t0 + timeout
    base = Path(tempfile.mkdtemp(prefix="stac2cube-slurm-"))
    for sub in ("etc", "state/ctld", "state/d", "log", "run", "munge"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    # munged wants its socket directory traversable by all, the key readable by the owner only
    base.chmod(0o755)
    for sub in ("etc", "log", "run", "state"):
        (base / sub).chmod(0o755)
    (base / "munge").chmod(0o711)
    slurm = LocalSlurm(
        base_dir=base,
        partition=partition,
        cpus=cpus or os.cpu_count() or 1,
        mem_mb=mem_mb or _real_memory_mb() * 9 // 10,
        cluster_name=cluster_name,
    )
    with _LIVE_LOCK:
        _LIVE[id(slurm)] = slurm
    try:
        slurm.conf.write_text(
            render_slurm_conf(
                base=base,
                cpus=slurm.cpus,
                mem_mb=slurm.mem_mb,
                partition=partition,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                cluster_name=cluster_name,
            )
        )
        slurm.conf.chmod(0o644)
        slurm._start_munge(deadline)
        slurm._start_daemons(deadline)
    except BaseException:
        slurm.stop()
        raise
    slurm.start_seconds = time.monotonic() - t0
    return slurm


@atexit.register
def _stop_all() -> None:
    """Stop every instance still running when the interpreter exits."""
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for slurm in live:
        with contextlib.suppress(Exception):
            slurm.stop()
