"""A real Prefect server (with its UI), a process worker and headless Chromium, for
tests/test_ui.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
PREFECT_CLI = str(Path(sys.executable).with_name("prefect"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
#: where the UI check leaves its screenshots (CI keeps the folder; git ignores it)
ARTIFACTS = Path(os.environ.get("STAC2CUBE_UI_ARTIFACTS", ROOT / "ci-artifacts" / "ui"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), opener.open(url, timeout=2) as r:
            if r.status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(10)


@contextlib.contextmanager
def prefect_server(home: Path, *, ui: bool = True) -> Iterator[dict[str, str]]:
    """``prefect server start`` (UI on) on 127.0.0.1 with its own home; yields the env."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "10",
        "DO_NOT_TRACK": "1",
    }
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [PREFECT_CLI, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/health", proc, log)
        env["STAC2CUBE_UI_URL"] = f"http://127.0.0.1:{port}"
        yield env
    finally:
        _stop(proc)


@contextlib.contextmanager
def process_worker(env: dict[str, str], home: Path, pool: str = "stac2cube") -> Iterator[None]:
    """``prefect worker start --pool stac2cube`` (a process worker), stopped on exit."""
    log = home / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [PREFECT_CLI, "worker", "start", "--pool", pool, "--type", "process"],
            env=env,
            cwd=home,  # not the checkout: the deployments must not need it
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield
    finally:
        _stop(proc)


def prefect(env: dict[str, str], *args: str, timeout: float = 180, cwd: Path = ROOT) -> str:
    """Run the ``prefect`` command line; its output, or an error with it."""
    out = subprocess.run(
        [PREFECT_CLI, *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def chrome(width: int = 1400, height: int = 1800):
    """Debian's headless Chromium through its chromedriver (selenium)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--no-proxy-server",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
