"""The temporary Prefect API server of a process (stac2cube.prefect_api): a real server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from stac2cube import prefect_api


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        check=False,
    )


def test_a_started_server_answers_and_stops(tmp_path):
    """The server answers Prefect's health endpoint and serves flow runs; stop ends the child."""
    code = """
        import sys, httpx
        from stac2cube import prefect_api
        api = prefect_api.TemporaryApi().start()
        url = api.wait()
        assert url == api.url, (url, api.url)
        assert httpx.get(url + "/health").json() is True
        runs = httpx.post(url + "/flow_runs/filter", json={}).json()
        assert runs == [], runs
        process = api.process
        api.stop()
        assert process.poll() is not None and api.process is None
        assert "prefect.server.api.server" not in sys.modules  # not imported in this process
        print("ok")
    """
    out = _run(code, PREFECT_HOME=str(tmp_path / "home"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"


def test_launch_then_take_returns_the_same_server_once(tmp_path):
    """``launch`` starts one server; ``take`` hands it over once; a flow uses it through
    ``shared_prefect_api`` and the flow run is recorded there."""
    code = """
        import httpx
        from prefect import flow
        from stac2cube import prefect_api
        from stac2cube.flows.runner import shared_prefect_api

        first = prefect_api.launch()
        assert prefect_api.launch() is first  # a second launch starts nothing
        process = first.process

        @flow(name="probe")
        def probe():
            return 7

        with shared_prefect_api() as url:
            assert url == first.url, (url, first.url)
            assert probe() == 7
            names = [r["name"] for r in httpx.post(url + "/flows/filter", json={}).json()]
            assert names == ["probe"], names
        assert process.poll() is not None  # stopped with the block
        assert prefect_api.take() is not first  # handed over once: a new one is made
        print("ok")
    """
    out = _run(code, PREFECT_HOME=str(tmp_path / "home"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "ok"


def test_no_server_is_started_when_one_is_configured():
    """With ``PREFECT_API_URL`` set (a running server), ``launch`` starts nothing."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        assert prefect_api.configured_url() == "http://127.0.0.1:1/api"
        assert prefect_api.launch() is None


def test_a_server_that_does_not_answer_gives_one_clear_error_and_is_stopped(tmp_path):
    """No answer within the time-out: one line naming it, and the child is stopped."""
    code = """
        from stac2cube import prefect_api
        api = prefect_api.TemporaryApi().start()
        process = api.process
        try:
            api.wait(timeout=0.5)
        except RuntimeError as exc:
            print("error:", exc)
        print(process.poll() is not None, api.process is None)
    """
    out = _run(code, PREFECT_HOME=str(tmp_path / "home"))
    assert out.returncode == 0, out.stderr[-3000:]
    error, stopped = out.stdout.strip().splitlines()[-2:]
    assert error == "error: Prefect's temporary API server did not start: no answer in 0.5 s"
    assert stopped == "True True"
