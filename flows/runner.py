"""Task-runner selection: the same flows on a laptop (LocalCluster) and on SLURM (dask-jobqueue).

``runner`` is one of

* ``threads``: no Dask cluster: Prefect's thread pool runs the tasks and dask's threaded
  scheduler the pixels, in the flow's process (the fastest on one machine,
  ``bench/RESULTS.md``; no dashboard);
* ``local``: a ``distributed.LocalCluster`` in the flow's process (threads by default), with
  Dask's dashboard;
* ``slurm``: a dask-jobqueue ``SLURMCluster`` whose workers are SLURM batch jobs;
* ``tcp://host:port`` (or ``tls://``): an already running Dask scheduler;
* ``auto``: ``slurm`` inside a SLURM allocation (``SLURM_JOB_ID`` set), else ``threads``, or
  ``local`` when a ``DaskCluster`` block is named (``$STAC2CUBE_DASK_CLUSTER``,
  ``--dask-cluster``): its local cluster settings.

:func:`task_runner_for` builds the prefect-dask ``DaskTaskRunner`` of a runner; a flow given an
:class:`AutoDaskTaskRunner` picks it when each run starts (from ``$STAC2CUBE_RUNNER`` and
``$STAC2CUBE_DASK_CLUSTER``, else ``auto``), so deployments and schedules choose too.

Pixel work (dask arrays) runs on the task runner's workers when a task, or the flow itself,
wraps it in :func:`pixel_client`::

    @task
    def write(session, ds):
        with pixel_client():
            part = ds.compute()      # computed by the cluster's workers
        to_icechunk(part, session)

Example:
    >>> resolve_runner("auto", environ={"SLURM_JOB_ID": "42"})
    'slurm'
    >>> resolve_runner("auto", environ={})
    'threads'
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Literal

from prefect.task_runners import TaskRunner

from stac2cube.parameters import resolve_runner  # plain Python: the CLI checks it first

if TYPE_CHECKING:
    from distributed import Client
    from prefect_dask import DaskTaskRunner

    from stac2cube.blocks import DaskCluster

__all__ = [
    "CLUSTER_ENV",
    "RUNNER_ENV",
    "AutoDaskTaskRunner",
    "RunnerName",
    "pixel_client",
    "resolve_runner",
    "shared_prefect_api",
    "task_runner_for",
]

#: The named runners; any ``tcp://host:port`` scheduler address is accepted as well.
RunnerName = Literal["auto", "local", "threads", "slurm"]

#: Environment variable naming the runner of flows using :class:`AutoDaskTaskRunner`.
RUNNER_ENV = "STAC2CUBE_RUNNER"
#: Environment variable naming the saved :class:`~stac2cube.blocks.DaskCluster` block to use.
CLUSTER_ENV = "STAC2CUBE_DASK_CLUSTER"


def task_runner_for(
    runner: str = "auto",
    cluster: DaskCluster | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> DaskTaskRunner:
    """A prefect-dask ``DaskTaskRunner`` for ``runner``, configured from a cluster block.

    Args:
        runner: ``auto``, ``local``, ``threads``, ``slurm`` or a scheduler address (see
            :func:`resolve_runner`).
        cluster: Settings of the cluster (a :class:`~stac2cube.blocks.DaskCluster`); the
            resolved runner picks which of its settings apply. Default: the block's defaults.
            With ``auto`` outside SLURM, a block means its local cluster (not ``threads``).
        environ: Environment for ``auto`` (default ``os.environ``).

    Returns:
        A task runner, not started (Prefect starts it with the flow run); for ``threads``
        Prefect's ``ThreadPoolTaskRunner``.

    Example:
        >>> from stac2cube.flows.build import get_stac_layers
        >>> flow = get_stac_layers.with_options(task_runner=task_runner_for("local"))
    """
    from prefect_dask import DaskTaskRunner

    from stac2cube.blocks import DaskCluster

    kind = resolve_runner(runner, environ)
    if kind == "threads" and runner.strip() == "auto" and cluster is not None:
        kind = "local"  # a cluster block was named: its local cluster, not the threads
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()  # type: ignore[return-value]
    if kind not in ("local", "slurm"):  # a running scheduler: its workers are other processes
        return _draining_runner_class()(address=kind)
    block = cluster if cluster is not None else DaskCluster(kind=kind)
    in_process = kind == "local" and not block.cluster_kwargs(kind).get("processes", False)
    runner_class = DaskTaskRunner if in_process else _draining_runner_class()
    return runner_class(
        cluster_class=block.cluster_class(kind),
        cluster_kwargs=block.cluster_kwargs(kind),
        adapt_kwargs=block.adapt_kwargs(kind),
    )


def _draining_runner_class():
    """:class:`DrainingDaskTaskRunner`, defined on first use (``prefect_dask`` is imported only
    when a Dask runner is made)."""
    cls = globals().get("DrainingDaskTaskRunner")
    if cls is None:
        from prefect_dask import DaskTaskRunner

        class DrainingDaskTaskRunner(DaskTaskRunner):
            """A ``DaskTaskRunner`` whose workers (other processes: SLURM jobs, a scheduler's
            workers) deliver the task-run events and logs Prefect still queues before the
            cluster stops: a task's final state is sent in the background after it returns,
            and a worker stopped first leaves its run RUNNING in the UI."""

            def __exit__(self, *args):
                _drain_workers(self._client)
                super().__exit__(*args)

        DrainingDaskTaskRunner.__module__ = __name__
        globals()["DrainingDaskTaskRunner"] = cls = DrainingDaskTaskRunner
    return cls


def __getattr__(name: str):
    """``DrainingDaskTaskRunner`` on demand (for pickle)."""
    if name == "DrainingDaskTaskRunner":
        return _draining_runner_class()
    raise AttributeError(name)


async def _drain_in_thread(timeout: float) -> None:
    """On a worker: :func:`_send_pending_logs_and_events` off the worker's event loop."""
    import asyncio

    await asyncio.to_thread(_send_pending_logs_and_events, timeout)


def _drain_workers(client, timeout: float = 5.0) -> None:
    """Each worker delivers its queued Prefect events and logs (at most ``timeout`` s each)."""
    if client is None:
        return
    try:
        client.run(_drain_in_thread, timeout, on_error="ignore")
    except Exception:  # a cluster already going away: nothing more to deliver
        import logging

        logging.getLogger(__name__).debug("could not drain the workers' events", exc_info=True)


class AutoDaskTaskRunner(TaskRunner):
    """A task runner chosen when each flow run starts, not when the flow is defined.

    Give it to a flow (``@flow(task_runner=AutoDaskTaskRunner())``) and every run of that flow,
    however started (Python call, CLI, deployment, schedule), gets
    ``task_runner_for(runner, cluster)`` with

    * ``runner``: the constructor's, else ``$STAC2CUBE_RUNNER``, else ``auto`` (SLURM inside a
      SLURM allocation, threads elsewhere);
    * ``cluster``: the constructor's block (or the name of a saved ``DaskCluster`` block), else
      the block named by ``$STAC2CUBE_DASK_CLUSTER``, else the block's defaults.

    A deployment picks SLURM and its block with job variables, e.g.
    ``env: {STAC2CUBE_RUNNER: slurm, STAC2CUBE_DASK_CLUSTER: terrabyte-cpu}``.
    """

    def __init__(
        self,
        runner: str | None = None,
        cluster: DaskCluster | str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """Remember the choices; nothing is resolved or started here.

        Args:
            runner: ``auto``, ``threads``, ``local``, ``slurm`` or a scheduler address; None:
                from the environment.
            cluster: A ``DaskCluster`` block or the name of a saved one; None: from the
                environment.
            environ: Environment to read (default ``os.environ`` at run start).
        """
        super().__init__()
        self.runner = runner
        self.cluster = cluster
        self.environ = environ

    def resolve(self) -> DaskTaskRunner:
        """The concrete ``DaskTaskRunner`` for the current environment."""
        from stac2cube.blocks import DaskCluster

        env = os.environ if self.environ is None else self.environ
        runner = self.runner or env.get(RUNNER_ENV) or "auto"
        cluster = self.cluster if self.cluster is not None else env.get(CLUSTER_ENV) or None
        if isinstance(cluster, str):
            cluster = DaskCluster.load(cluster)
        return task_runner_for(runner, cluster, environ=env)

    def duplicate(self) -> DaskTaskRunner:  # type: ignore[override]
        """Called by Prefect at the start of each flow run: the resolved runner."""
        return self.resolve()

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        """Never used: each flow run works with the runner :meth:`duplicate` resolved."""
        raise RuntimeError("AutoDaskTaskRunner is resolved when a flow run starts")

    def __eq__(self, other: object) -> bool:
        """Equal to another auto runner with the same choices."""
        return isinstance(other, AutoDaskTaskRunner) and (self.runner, self.cluster) == (
            other.runner,
            other.cluster,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like DaskTaskRunner


def _worker_or_none():
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


def _flow_dask_runner():
    """The flow run's ``DaskTaskRunner`` once started (its cluster starts on first use), or None."""
    from prefect.context import FlowRunContext

    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:  # without the hpc extra there is no Dask task runner to find
        return None
    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None)
    if isinstance(runner, DaskTaskRunner) and getattr(runner, "_started", False):
        return runner
    return None


@contextlib.contextmanager
def pixel_client() -> Iterator[Client | None]:
    """Make dask computations in this block run on the flow run's Dask cluster.

    * In a task submitted to a ``DaskTaskRunner`` (so running on a Dask worker): the worker's
      client becomes dask's scheduler, and the task's thread is handed back to the worker while
      the block runs (``secede``/``rejoin``), so a cluster of single-threaded workers does not
      deadlock waiting for itself.
    * In the flow, or a task it calls directly, when the flow's task runner is a
      ``DaskTaskRunner``: that runner's client becomes dask's scheduler (the cluster starts
      here if no task was submitted yet, so a run with nothing to compute starts none).
    * Anywhere else (no Dask task runner, no flow): nothing changes; dask keeps its local
      scheduler, and None is yielded.

    Yields:
        The ``distributed.Client`` computations go to, or None.
    """
    from distributed import get_client, rejoin, secede

    if _worker_or_none() is not None:
        client = get_client()
        secede()
        try:
            with client.as_current():
                yield client
        finally:
            rejoin()
        return
    runner = _flow_dask_runner()
    if runner is not None:
        client = runner.client
        with client.as_current():
            yield client
        return
    yield None


@contextlib.contextmanager
def shared_prefect_api() -> Iterator[str]:
    """Give Dask workers in other processes (SLURM jobs) this process's Prefect API.

    With no Prefect server configured, Prefect runs embedded: each process starts a temporary
    API server of its own on first use, so every SLURM worker would start one (seconds each, and
    its task runs would land in a database nobody reads). Inside this block the flow process's
    temporary server (:mod:`stac2cube.prefect_api`: Prefect's command, without importing
    Prefect's server package here; the CLI starts it early with ``prefect_api.launch``) is
    named in ``PREFECT_API_URL`` (the settings and the environment that ``sbatch`` hands to
    the jobs), and stopped when the block ends. Flow-run
    heartbeats are off inside (nothing watches a temporary server for runs that stop beating,
    and each flow call waits up to a second on exit for its heartbeat thread). With a server
    configured, nothing changes.

    Yields:
        The API URL flows and workers use.

    Example:
        >>> with shared_prefect_api():  # doctest: +SKIP
        ...     get_stac_layers.with_options(task_runner=task_runner_for("slurm"))(...)
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    from stac2cube import prefect_api

    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    server = prefect_api.take()  # started by the CLI already, or now
    url = server.wait()
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings({PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield url
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        # stopped here, not at exit: its log line comes before a CLI's error line
        _send_pending_logs_and_events()
        server.stop()


def _send_pending_logs_and_events(timeout: float = 5.0) -> None:
    """Deliver the run logs and events Prefect still queues for its API (before it stops)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=timeout)
