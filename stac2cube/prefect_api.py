"""Prefect's temporary API server, started early and without importing Prefect's server here.

With no Prefect server configured (``PREFECT_API_URL`` unset), every process that runs a flow
starts a temporary API server: Prefect's ``SubprocessASGIServer`` runs ``uvicorn`` with
``prefect.server.api.server:create_app`` in a child process. Prefect imports its whole server
package into the calling process first (about 3.5 s of CPU on this project's 2-core machine)
only to reach that class. :class:`TemporaryApi` starts the same child with the same command and
environment, and imports nothing of the server here; :func:`launch` starts it as soon as a
command knows it will run a flow, so the child's start-up overlaps the command's own imports.

Example:
    >>> api = launch()  # doctest: +SKIP
    >>> api.wait()  # once /api/health answers  # doctest: +SKIP
    'http://127.0.0.1:8123/api'
    >>> api.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: Ports tried for the server, like Prefect's own temporary server.
PORTS = range(8000, 9000)
#: uvicorn's exit status when its port is taken: start again on another port.
_PORT_IN_USE = 3

_pending: TemporaryApi | None = None


def _free_port() -> int:
    for _ in range(20):
        port = random.choice(PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for Prefect's temporary API server in 8000-8999")


class TemporaryApi:
    """One temporary Prefect API server in a child process (Prefect's own command)."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The API URL (``http://127.0.0.1:PORT/api``)."""
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> TemporaryApi:
        """Start the child process; returns at once (see :meth:`wait`)."""
        import prefect
        from prefect.settings import get_current_settings

        self.port = _free_port()
        env = {
            **os.environ,
            # what Prefect's SubprocessASGIServer sets: no UI, an ephemeral, final server
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            **get_current_settings().to_environment_variables(exclude_unset=True),
        }
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(Path(prefect.__file__).parent.parent),
        ]
        command += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
        self.process = subprocess.Popen(command, env=env)
        atexit.register(self.stop)
        log.debug("starting a temporary Prefect server on %s", self.url)
        return self

    def wait(self, timeout: float | None = None) -> str:
        """Wait until the server answers ``/api/health``; its API URL.

        Args:
            timeout: Seconds to wait; default Prefect's
                ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``.

        Raises:
            RuntimeError: The server did not answer in time or exited.
        """
        import httpx
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        if self.process is None:
            self.start()
        limit = timeout or PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        deadline = time.monotonic() + limit
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                code = self.process.poll()
                if code == _PORT_IN_USE:  # another process took the port meanwhile
                    self.start()
                    continue
                if code is not None:
                    break
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return self.url
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        code = self.process.poll()
        self.stop()
        state = f"it exited with status {code}" if code is not None else f"no answer in {limit:g} s"
        raise RuntimeError(f"Prefect's temporary API server did not start: {state}")

    def stop(self) -> None:
        """Stop the child process (again: nothing)."""
        process, self.process = self.process, None
        if process is None:
            return
        log.debug("stopping the temporary Prefect server on %s", self.url)
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def configured_url() -> str | None:
    """The Prefect API URL of the settings (a running server), or None."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def launch() -> TemporaryApi | None:
    """Start a temporary API server now when no server is configured (None when one is).

    The next :func:`take` returns it; nothing else uses it until then.
    """
    global _pending
    if configured_url() is not None:
        return None
    if _pending is None:
        _pending = TemporaryApi().start()
    return _pending


def take() -> TemporaryApi:
    """The server :func:`launch` started (the caller stops it), else a new one, starting."""
    global _pending
    api, _pending = _pending, None
    return api if api is not None else TemporaryApi().start()
