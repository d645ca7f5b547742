"""A real STAC API (stac-fastapi-pgstac) on a throwaway local PostgreSQL + PostGIS.

Used by the integration tests and the benchmarks: :func:`start_local_stac_api` creates a fresh
PostgreSQL cluster in a temporary directory, starts it on ``127.0.0.1`` with durability switched
off (it is thrown away afterwards), installs the pgstac schema with pypgstac, loads the given
collections and items, and serves them with stac-fastapi-pgstac under uvicorn, also on
``127.0.0.1``. Nothing ever binds to another interface.

Example::

    with start_local_stac_api(collections=[coll], items=items) as api:
        client = pystac_client.Client.open(api.url)

Notes:
    * ``initdb`` and ``postgres`` refuse to run as root, so when the euid is 0 they run as the
      ``postgres`` system user (``runuser -u postgres --``) in a directory chowned to it.
    * pgstac reads the database live, so collections and items may be loaded before or after the
      API has started.
    * ``context`` is switched on (so responses carry ``numberMatched``) and ``eo:cloud_cover`` is
      registered as a numeric queryable (else ``query``/``sortby`` on it compare text).
    * An :mod:`atexit` hook stops every instance still running when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "LocalStacApi",
    "PgstacError",
    "postgres_available",
    "start_local_stac_api",
]

#: Loopback requests must never go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LOG_TAIL_LINES = 40
_HOST = "127.0.0.1"
_DB_USER = "postgres"
_DB_NAME = "postgres"

#: Numeric queryables registered after the migration: (name, JSON-schema definition).
_NUMERIC_QUERYABLES = (("eo:cloud_cover", '{"type": "number", "minimum": 0, "maximum": 100}'),)

#: Environment variables of the parent that must not leak into the API (its settings read them).
_API_ENV_DROP = (
    "ENABLED_EXTENSIONS",
    "ENABLE_TRANSACTIONS_EXTENSIONS",
    "PREFIX_PATH",
    "USE_API_HYDRATE",
    "UVICORN_ROOT_PATH",
    "ROOT_PATH",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
)


class PgstacError(RuntimeError):
    """The local PostgreSQL / pgstac / STAC API could not be started or used."""


# --------------------------------------------------------------------------------------------
# helpers


def _pgbin() -> Path | None:
    """Return the newest ``/usr/lib/postgresql/*/bin`` directory holding ``initdb``, if any."""

    def version_key(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", Path(path).parent.name)) or (0,)

    dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if Path(d, "initdb").is_file()]
    if not dirs:
        return None
    return Path(max(dirs, key=version_key))


def _as_postgres() -> list[str]:
    """Return the command prefix that runs a program as the ``postgres`` user when root."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def postgres_available() -> bool:
    """Tell whether a local PostgreSQL with PostGIS can be started here.

    Returns:
        True if ``/usr/lib/postgresql/*/bin/initdb`` exists, the PostGIS extension files of that
        same PostgreSQL version are installed, and (when running as root) the ``postgres`` system
        user and ``runuser`` exist.
    """
    pgbin = _pgbin()
    if pgbin is None:
        return False
    version = pgbin.parent.name
    if not Path(f"/usr/share/postgresql/{version}/extension/postgis.control").is_file():
        return False
    if not glob.glob(f"/usr/lib/postgresql/{version}/lib/postgis-3*.so"):
        return False
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        if shutil.which("runuser") is None:
            return False
    return True


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    """Tell whether uvicorn could listen on ``port`` on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is fine
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
        return True


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file, or a note that it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _error(message: str, *logs: Path) -> PgstacError:
    """Build a :class:`PgstacError` whose message ends with the tails of the given logs."""
    parts = [message]
    for log in logs:
        parts.append(f"--- last lines of {log} ---\n{_tail(log)}")
    return PgstacError("\n".join(parts))


def _run_logged(cmd: list[str], log: Path, *, cwd: Path, timeout: float) -> int:
    """Run ``cmd`` with stdout/stderr appended to ``log``; return its exit status."""
    with open(log, "ab") as fh:
        try:
            return subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            return -1


class _PgstacConn:
    """A pypgstac ``PgstacDB`` whose connection pool is really closed on exit.

    ``PgstacDB.__exit__`` only hands the connection back and forgets the pool, which leaves the
    pool's worker thread and connection alive; this wrapper closes the pool as well.
    """

    def __init__(self, dsn: str) -> None:
        from pypgstac.db import PgstacDB

        self.db = PgstacDB(dsn=dsn)

    def __enter__(self) -> Any:
        self.db.connect()
        return self.db

    def __exit__(self, *exc: object) -> None:
        pool = self.db.pool
        self.db.disconnect()
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close()


# --------------------------------------------------------------------------------------------
# the handle

_LIVE: dict[int, LocalStacApi] = {}
_LIVE_LOCK = threading.Lock()


@dataclass
class LocalStacApi:
    """A running local pgstac database and (once started) its STAC API.

    Attributes:
        url: Root URL of the STAC API, e.g. ``http://127.0.0.1:PORT`` (empty until it started).
        dsn: libpq URL of the database, ``postgresql://postgres@127.0.0.1:PGPORT/postgres``.
        base_dir: Temporary directory holding the cluster's data directory and all logs.
    """

    url: str
    dsn: str
    base_dir: Path
    _pgbin: Path | None = field(default=None, repr=False)
    _api_proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _pg_started: bool = field(default=False, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # -- logs ---------------------------------------------------------------------------------

    @property
    def postgres_log(self) -> Path:
        """Path of the PostgreSQL server log."""
        return self.base_dir / "postgres.log"

    @property
    def api_log(self) -> Path:
        """Path of the uvicorn / stac-fastapi-pgstac log (stdout and stderr)."""
        return self.base_dir / "api.log"

    @property
    def data_dir(self) -> Path:
        """Path of the PostgreSQL data directory."""
        return self.base_dir / "data"

    # -- loading ------------------------------------------------------------------------------

    def load_collections(self, collections: list[dict]) -> None:
        """Insert or replace STAC collections.

        Args:
            collections: Collection dicts (STAC JSON); an existing collection with the same id
                is replaced.

        Raises:
            PgstacError: If pgstac rejects them.
        """
        if collections:
            self._load("collections", collections)

    def load_items(self, items: list[dict]) -> None:
        """Insert or replace STAC items.

        Args:
            items: Item dicts (STAC JSON), each with a ``collection`` that is already loaded; an
                existing item with the same collection and id is replaced.

        Raises:
            PgstacError: If pgstac rejects them.
        """
        if items:
            self._load("items", items)

    def _load(self, kind: str, records: list[dict]) -> None:
        """Upsert ``records`` with pypgstac's Loader (``Methods.upsert``)."""
        if self._stopped:
            raise PgstacError(f"cannot load {kind}: the local STAC database is stopped")
        from pypgstac.load import Loader, Methods

        try:
            with _PgstacConn(self.dsn) as db:
                loader = Loader(db)
                # Loader takes an iterator of dicts directly; that avoids its ndjson reader,
                # which rewrites escaped backslashes.
                if kind == "collections":
                    loader.load_collections(iter(records), Methods.upsert)
                else:
                    loader.load_items(iter(records), Methods.upsert)
        except Exception as exc:
            raise _error(
                f"loading {len(records)} {kind} into {self.dsn} failed: "
                f"{type(exc).__name__}: {exc}",
                self.postgres_log,
            ) from exc

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop uvicorn (its whole process group), then PostgreSQL, and remove ``base_dir``.

        Idempotent, and safe to call on a half-started instance.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._stop_api()
                self._stop_postgres()
            finally:
                shutil.rmtree(self.base_dir, ignore_errors=True)
                with _LIVE_LOCK:
                    _LIVE.pop(id(self), None)

    def _stop_api(self) -> None:
        """Terminate the uvicorn process group, escalating to SIGKILL."""
        proc, self._api_proc = self._api_proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)  # started with start_new_session: pgid == pid
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the group may still hold children after its leader exited
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _stop_postgres(self) -> None:
        """Stop PostgreSQL with ``pg_ctl -m immediate`` (the cluster is thrown away anyway)."""
        if not self._pg_started or self._pgbin is None:
            return
        self._pg_started = False
        cmd = [
            *_as_postgres(),
            str(self._pgbin / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-m",
            "immediate",
            "-w",
            "-t",
            "30",
            "stop",
        ]
        subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.base_dir,
            check=False,
            timeout=60,
        )

    def __enter__(self) -> LocalStacApi:
        """Return self; the API is already running."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop everything."""
        self.stop()

    # -- start-up steps -----------------------------------------------------------------------

    def _init_and_start_postgres(self, deadline: float) -> None:
        """Create the cluster with initdb and start it on a free loopback port."""
        assert self._pgbin is not None
        as_pg = _as_postgres()
        initdb_log = self.base_dir / "initdb.log"
        rc = _run_logged(
            [
                *as_pg,
                str(self._pgbin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                _DB_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            initdb_log,
            cwd=self.base_dir,
            timeout=max(deadline - time.monotonic(), 5.0),
        )
        if rc != 0:
            raise _error(f"initdb failed (exit status {rc})", initdb_log)

        pg_ctl_log = self.base_dir / "pg_ctl.log"
        for _attempt in range(3):  # a free port may be taken before postgres binds it
            port = _free_port()
            opts = (
                f"-p {port} -k {self.base_dir} -c listen_addresses={_HOST} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            wait_s = max(int(deadline - time.monotonic()), 5)
            rc = _run_logged(
                [
                    *as_pg,
                    str(self._pgbin / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.postgres_log),
                    "-w",
                    "-t",
                    str(wait_s),
                    "-o",
                    opts,
                    "start",
                ],
                pg_ctl_log,
                cwd=self.base_dir,
                timeout=wait_s + 10,
            )
            if rc == 0:
                self._pg_started = True
                self.dsn = f"postgresql://{_DB_USER}@{_HOST}:{port}/{_DB_NAME}"
                return
            # pg_ctl may have left a server half-started: make sure it is gone before retrying
            self._pg_started = True
            self._stop_postgres()
            if "already in use" not in _tail(self.postgres_log, 200):
                break
        raise _error(
            f"PostgreSQL did not start (pg_ctl exit status {rc})", pg_ctl_log, self.postgres_log
        )

    def _migrate(self) -> None:
        """Install the pgstac schema, switch ``context`` on and add numeric queryables."""
        from pypgstac.migrate import Migrate

        try:
            with _PgstacConn(self.dsn) as db:
                Migrate(db).run_migration()
                conn = db.connect()
                with conn.transaction():
                    conn.execute("SET search_path = pgstac, public")
                    # numberMatched / matched() in search responses
                    conn.execute("UPDATE pgstac_settings SET value = 'on' WHERE name = 'context'")
                    for name, definition in _NUMERIC_QUERYABLES:
                        conn.execute(
                            "INSERT INTO queryables"
                            " (name, definition, property_wrapper, property_index_type)"
                            " SELECT %s, %s::jsonb, 'to_float', 'BTREE'"
                            " WHERE NOT EXISTS (SELECT FROM queryables WHERE name = %s)",
                            (name, definition, name),
                        )
        except Exception as exc:
            raise _error(
                f"pgstac migration of {self.dsn} failed: {type(exc).__name__}: {exc}",
                self.postgres_log,
            ) from exc

    def _start_api(self, deadline: float, port: int | None) -> None:
        """Start stac-fastapi-pgstac under uvicorn and wait until it answers."""
        db_port = self.dsn.rsplit(":", 1)[1].split("/", 1)[0]
        env = {k: v for k, v in os.environ.items() if k not in _API_ENV_DROP}
        # stac-fastapi-pgstac 7.x reads PG* (PostgresSettings); older releases read POSTGRES_*.
        env.update(
            PGUSER=_DB_USER,
            PGPASSWORD="",
            PGHOST=_HOST,
            PGPORT=db_port,
            PGDATABASE=_DB_NAME,
            POSTGRES_USER=_DB_USER,
            POSTGRES_PASS="",
            POSTGRES_HOST_READER=_HOST,
            POSTGRES_HOST_WRITER=_HOST,
            POSTGRES_PORT=db_port,
            POSTGRES_DBNAME=_DB_NAME,
            PYTHONUNBUFFERED="1",
        )
        if port is not None and not _port_free(port):
            # else the readiness poll could be answered by whatever already listens there
            raise PgstacError(f"port {port} on {_HOST} is already in use")
        attempts = 1 if port is not None else 3
        for _attempt in range(attempts):
            api_port = port if port is not None else _free_port()
            self.url = f"http://{_HOST}:{api_port}"
            with open(self.api_log, "ab") as log:
                # cwd=base_dir: the settings classes also read a ./.env file, keep it out
                self._api_proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "stac_fastapi.pgstac.app:create_app",
                        "--factory",
                        "--host",
                        _HOST,
                        "--port",
                        str(api_port),
                        "--log-level",
                        "warning",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.base_dir,
                    env=env,
                    start_new_session=True,
                )
            if self._wait_ready(deadline):
                time.sleep(0.05)
                if self._api_proc.poll() is None:  # answered by our server, not a squatter
                    return
            port_taken = "address already in use" in _tail(self.api_log, 20).lower()
            status = self._api_proc.poll() if self._api_proc else None
            self._stop_api()
            if not (port_taken and time.monotonic() < deadline):
                what = (
                    f"exited with status {status}"
                    if status is not None
                    else "did not answer before the timeout"
                )
                raise _error(f"stac-fastapi-pgstac at {self.url} {what}", self.api_log)
        raise _error(f"stac-fastapi-pgstac could not bind a port on {_HOST}", self.api_log)

    def _wait_ready(self, deadline: float) -> bool:
        """Poll ``/_mgmt/ping`` then ``/`` (which reads the database) until both answer 200."""
        proc = self._api_proc
        for path in ("/_mgmt/ping", "/"):
            while True:
                if proc is None or proc.poll() is not None:
                    return False
                try:
                    with _NO_PROXY.open(self.url + path, timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        return True


# --------------------------------------------------------------------------------------------
# entry point


def start_local_stac_api(
    *,
    collections: list[dict] | None = None,
    items: list[dict] | None = None,
    port: int | None = None,
    timeout: float = 60.0,
) -> LocalStacApi:
    """Start PostgreSQL + pgstac + stac-fastapi-pgstac on 127.0.0.1 and load data.

    Args:
        collections: Collection dicts loaded (upserted) before the API starts.
        items: Item dicts loaded (upserted) after the collections.
        port: TCP port for the API on 127.0.0.1; a free one when None.
        timeout: Seconds allowed for the whole start-up.

    Returns:
        A running :class:`LocalStacApi`; stop it with ``stop()`` or use it as a context manager.

    Raises:
        PgstacError: If PostgreSQL/PostGIS is missing or any step fails; the message ends with the
            tail of the relevant log. Everything already started is stopped again.
    """
    pgbin = _pgbin()
    if pgbin is None or not postgres_available():
        raise PgstacError(
            "PostgreSQL with PostGIS is not installed (need /usr/lib/postgresql/*/bin/initdb and "
            "the postgis extension; apt-get install postgresql-15-postgis-3)"
        )
    if port is not None and not _port_free(port):
        raise PgstacError(f"port {port} on {_HOST} is already in use")
    deadline = time.monotonic() + timeout
    base = Path(tempfile.mkdtemp(prefix="stac2cube-pg-"))
    os.chmod(base, 0o755)  # the postgres user must be able to enter it
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    api = LocalStacApi(url="", dsn="", base_dir=base, _pgbin=pgbin)
    with _LIVE_LOCK:
        _LIVE[id(api)] = api
    try:
        api._init_and_start_postgres(deadline)
        api._migrate()
        api.load_collections(list(collections or []))
        api.load_items(list(items or []))
        api._start_api(deadline, port)
    except BaseException:
        api.stop()
        raise
    return api


@atexit.register
def _stop_all() -> None:
    """Stop every instance still running when the interpreter exits."""
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for api in live:
        with contextlib.suppress(Exception):
            api.stop()
