"""The Dask cluster block: how many workers, and on SLURM which partition, account and limits."""

from __future__ import annotations

import re
import sys
from typing import Any, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import Field, field_validator, model_validator

_LOGO = (
    "https://raw.githubusercontent.com/PrefectHQ/prefect/"
    "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/process.png"
)
_DOCS = "https://jobqueue.dask.org/en/latest/generated/dask_jobqueue.SLURMCluster.html"
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")

ClusterKind = Literal["local", "slurm"]

#: The dask cluster class of each kind (dotted names, as ``DaskTaskRunner(cluster_class=...)``).
CLUSTER_CLASSES: dict[str, str] = {
    "local": "distributed.LocalCluster",
    "slurm": "dask_jobqueue.SLURMCluster",
}


class DaskCluster(Block):
    """Settings of the Dask cluster a flow's tasks and pixel work run on.

    One block holds the settings of both kinds: a ``LocalCluster`` on the machine running the
    flow (workers, threads) and a dask-jobqueue ``SLURMCluster`` whose workers are SLURM batch
    jobs (partition, account, cores, memory, walltime, extra ``#SBATCH`` lines, network
    interface). ``kind`` is the kind the block is for by default; the flow's ``runner``
    parameter may pick the other (see :func:`stac2cube.flows.runner.task_runner_for`).

    Attributes:
        kind: local or slurm.
        n_workers: Local workers.
        threads_per_worker: Threads of each local worker (None: the machine's cores).
        local_processes: Run local workers as processes instead of threads.
        partition: SLURM partition (``#SBATCH -p``).
        account: SLURM account (``#SBATCH -A``).
        cores: Cores of each SLURM job.
        memory: Memory of each SLURM job.
        processes: Dask worker processes in each SLURM job.
        walltime: Time limit of each SLURM job.
        job_extra_directives: Extra ``#SBATCH`` options.
        interface: Network interface of scheduler and workers.
        scheduler_host: Address the scheduler listens on.
        python: Python interpreter of the SLURM workers.
        job_script_prologue: Shell lines run in each job before the worker starts.
        log_directory: Directory of the SLURM jobs' output files.
        local_directory: Scratch directory of the workers.
        min_jobs: SLURM jobs kept running.
        max_jobs: SLURM jobs at most.
    """

    _block_type_name: ClassVar[str] = "Dask Cluster"
    _block_type_slug: ClassVar[str] = "dask-cluster"
    _logo_url: ClassVar[str] = _LOGO
    _documentation_url: ClassVar[str] = _DOCS
    _description: ClassVar[str] = (
        "Where stac2cube's tasks and pixel work run: a local Dask cluster, or Dask workers "
        "in SLURM jobs (partition, account, cores, memory, walltime) via dask-jobqueue."
    )
    _code_example: ClassVar[str] = """\
        from stac2cube.blocks import DaskCluster
        from stac2cube.flows.runner import task_runner_for

        cluster = DaskCluster.load("BLOCK_NAME")
        runner = task_runner_for("slurm", cluster)
        """

    kind: ClusterKind = Field(
        default="local",
        description="The kind of cluster: local (this machine) or slurm (workers as SLURM jobs).",
    )

    # -- local ------------------------------------------------------------------------------
    n_workers: int = Field(default=1, ge=1, description="Local: number of Dask workers.")
    threads_per_worker: int | None = Field(
        default=None,
        ge=1,
        description="Local: threads of each worker; empty means the machine's cores.",
    )
    local_processes: bool = Field(
        default=False,
        description=(
            "Local: run workers as processes; threads (the default) need no Prefect server "
            "and suit GDAL reads, which release the GIL."
        ),
    )

    # -- SLURM ------------------------------------------------------------------------------
    partition: str | None = Field(
        default=None, description="SLURM: partition (queue) of the worker jobs."
    )
    account: str | None = Field(
        default=None, description="SLURM: account (project) the jobs are charged to."
    )
    cores: int = Field(default=4, ge=1, description="SLURM: cores of each worker job.")
    memory: str = Field(default="16GB", description="SLURM: memory of each worker job, e.g. 16GB.")
    processes: int = Field(default=1, ge=1, description="SLURM: Dask worker processes in each job.")
    walltime: str = Field(
        default="01:00:00", description="SLURM: time limit of each job, [D-]HH:MM:SS."
    )
    job_extra_directives: list[str] = Field(
        default_factory=list,
        description="SLURM: extra sbatch options, one a line, e.g. --qos=normal.",
    )
    interface: str | None = Field(
        default=None,
        description="SLURM: network interface of scheduler and workers, e.g. ib0 or lo.",
    )
    scheduler_host: str | None = Field(
        default=None,
        description="SLURM: address the scheduler listens on, e.g. 127.0.0.1 (else: interface).",
    )
    python: str | None = Field(
        default=None,
        description="SLURM: Python of the workers; empty means the flow's own interpreter.",
    )
    job_script_prologue: list[str] = Field(
        default_factory=list,
        description="SLURM: shell lines run before the worker starts, e.g. module load.",
    )
    log_directory: str | None = Field(
        default=None, description="SLURM: directory for the jobs' output and error files."
    )
    local_directory: str | None = Field(
        default=None, description="Scratch directory of the workers (spilled data)."
    )
    min_jobs: int = Field(default=1, ge=0, description="SLURM: jobs kept running at least.")
    max_jobs: int = Field(default=1, ge=1, description="SLURM: jobs running at most.")

    @field_validator("memory")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        from dask.utils import parse_bytes

        try:
            parse_bytes(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"memory {value!r} is not a size such as 16GB") from exc
        return value

    @field_validator("walltime")
    @classmethod
    def _check_walltime(cls, value: str) -> str:
        if not _WALLTIME.match(value):
            raise ValueError(f"walltime {value!r} is not [D-]HH:MM[:SS]")
        return value

    @model_validator(mode="after")
    def _check_jobs(self) -> DaskCluster:
        if self.max_jobs < self.min_jobs:
            raise ValueError(f"max_jobs ({self.max_jobs}) < min_jobs ({self.min_jobs})")
        if self.processes > self.cores:
            raise ValueError(f"processes ({self.processes}) > cores ({self.cores})")
        return self

    def cluster_class(self, kind: ClusterKind | None = None) -> str:
        """The dotted name of the Dask cluster class of ``kind`` (default: the block's)."""
        return CLUSTER_CLASSES[kind or self.kind]

    def cluster_kwargs(self, kind: ClusterKind | None = None) -> dict[str, Any]:
        """Keyword arguments of the cluster class of ``kind`` (default: the block's kind).

        The dashboard binds a free port (``:0``): a fixed 8787 clashes between runs.
        """
        if (kind or self.kind) == "local":
            return {
                "n_workers": self.n_workers,
                "threads_per_worker": self.threads_per_worker,
                "processes": self.local_processes,
                "dashboard_address": ":0",
                **({"local_directory": self.local_directory} if self.local_directory else {}),
            }
        scheduler_options: dict[str, Any] = {"dashboard_address": ":0"}
        if self.scheduler_host:
            scheduler_options["host"] = self.scheduler_host
        kwargs: dict[str, Any] = {
            "job_name": "stac2cube-dask",
            "queue": self.partition,
            "account": self.account,
            "cores": self.cores,
            "memory": self.memory,
            "processes": self.processes,
            "walltime": self.walltime,
            "job_extra_directives": list(self.job_extra_directives),
            "job_script_prologue": list(self.job_script_prologue),
            "interface": self.interface,
            "python": self.python or sys.executable,
            "scheduler_options": scheduler_options,
        }
        if self.log_directory:
            kwargs["log_directory"] = self.log_directory
        if self.local_directory:
            kwargs["local_directory"] = self.local_directory
        return kwargs

    def adapt_kwargs(self, kind: ClusterKind | None = None) -> dict[str, Any] | None:
        """``cluster.adapt`` arguments: SLURM jobs between min_jobs and max_jobs; None locally."""
        if (kind or self.kind) == "local":
            return None
        return {"minimum_jobs": self.min_jobs, "maximum_jobs": self.max_jobs}
