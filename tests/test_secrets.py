"""Secrets never leak: real builds, an update and failing runs with distinctive secret values set
(Planetary Computer key from the environment and from a Prefect Secret block, AWS credentials, the
SAS token the signer receives), then every sink is grepped for them: the CLI's stdout/stderr
(``--debug``), the Python logs, every byte of the stores and of the files beside them, the cube's
attributes, the Prefect artifacts, logs, parameters and states of the runs, and the errors.

Successful runs read local COGs (no signing is possible offline); the failing run signs for real:
its assets are Azure Blob hrefs, the signer gets a token from a local stand-in of the SAS API
(with the key), and the read fails on the unreachable host.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid

import pytest
from helpers import start_sas_server

from stac2cube.testing.synthetic import demo_bbox

pytestmark = pytest.mark.integration

_TAG = uuid.uuid4().hex[:12]
ENV_SECRETS = {
    "PC_SDK_SUBSCRIPTION_KEY": f"stac2cube-secret-pc-env-{_TAG}",
    "AWS_ACCESS_KEY_ID": f"AKIASTAC2CUBE{_TAG.upper()}",
    "AWS_SECRET_ACCESS_KEY": f"stac2cube-secret-aws-{_TAG}",
    "AWS_SESSION_TOKEN": f"stac2cube-secret-session-{_TAG}",
}
BLOCK_KEY = f"stac2cube-secret-pc-block-{_TAG}"
SAS_SIG = f"stac2cube-secret-sas-{_TAG}"
SECRETS = [*ENV_SECRETS.values(), BLOCK_KEY, SAS_SIG]
BLOCK_NAME = f"pc-key-{_TAG}"
BLOB_COLLECTION = f"secrets-blob-{_TAG}"
C1 = "sentinel-2-c1-l2a"


def leaks(text: str | bytes) -> list[str]:
    """The secrets found in ``text``."""
    if isinstance(text, bytes):
        return [s for s in SECRETS if s.encode() in text]
    return [s for s in SECRETS if s in text]


def context(text: str | bytes) -> list[str]:
    """Where the secrets are in ``text`` (80 characters either side)."""
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return [text[max(0, i - 80) : i + len(s) + 80] for s in SECRETS if (i := text.find(s)) >= 0]


#: ``(path, subscription key)`` of each request to the local SAS token API
TOKEN_REQUESTS: list[tuple[str, str | None]] = []


@pytest.fixture(scope="module")
def secrets_env(stac_api, synthetic_catalog, tmp_path_factory):
    """Secrets in the environment, a Prefect Secret block, a local SAS API, a blob collection.

    Yields the environment for CLI subprocesses."""
    from planetary_computer import sas
    from planetary_computer.settings import Settings
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL

    from stac2cube.testing.synthetic import make_collection

    global TOKEN_REQUESTS
    server, sas_url, TOKEN_REQUESTS = start_sas_server(SAS_SIG)

    # one C1 item re-served with Azure Blob hrefs: read through the real signer, which fails
    item = copy.deepcopy(next(i for i in synthetic_catalog.items if i["collection"] == C1))
    item["collection"] = BLOB_COLLECTION
    for key, asset in item["assets"].items():
        asset["href"] = f"https://s2c{_TAG}.blob.core.windows.net/c/{item['id']}/{key}.tif"
    stac_api.load_collections([make_collection("earth-search-c1", BLOB_COLLECTION, [item])])
    stac_api.load_items([item])

    Secret(value=BLOCK_KEY).save(BLOCK_NAME)
    settings = Settings.get()
    saved = (settings.subscription_key, settings.sas_url, dict(sas.TOKEN_CACHE))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in ENV_SECRETS.items():
            mp.setenv(name, value)
        mp.setenv("PC_SDK_SAS_URL", sas_url)
        settings.sas_url = sas_url
        sas.TOKEN_CACHE.clear()
        env = dict(os.environ)
        env["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
        yield env
    settings.subscription_key, settings.sas_url = saved[0], saved[1]
    sas.TOKEN_CACHE.clear()
    sas.TOKEN_CACHE.update(saved[2])
    server.shutdown()
    server.server_close()


def cli(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "stac2cube.cli", "--debug", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def request_args(stac_url, collection=C1):
    return [
        "--mission", "sentinel-2-l2a",
        "--bbox", *[str(v) for v in demo_bbox()],
        "--catalog", stac_url,
        "--collection", collection,
        "--bands", "red",
    ]  # fmt: skip


def prefect_records() -> list[tuple[str, str]]:
    """(what, text) of every artifact, flow run (parameters, state) and log of the session."""
    from prefect.client.orchestration import get_client

    out = []
    with get_client(sync_client=True) as client:
        for art in client.read_artifacts():
            out.append((f"artifact {art.key}", json.dumps(art.model_dump(mode="json"))))
        for run in client.read_flow_runs():
            out.append((f"flow run {run.name}", json.dumps(run.model_dump(mode="json"))))
        for run in client.read_task_runs():
            out.append((f"task run {run.name}", json.dumps(run.model_dump(mode="json"))))
        offset = 0
        while logs := client.read_logs(offset=offset, limit=200):
            out += [("log", log.message) for log in logs]
            offset += len(logs)
    return out


def test_no_secret_in_logs_artifacts_files_or_errors(secrets_env, stac_url, tmp_path, caplog):
    import logging

    from stac2cube import Stac2CubeError, get_stac_layers, open_cube, update_cube

    caplog.set_level(logging.DEBUG)
    texts: list[tuple[str, str]] = []
    cli_store, py_store = tmp_path / "cli.icechunk", tmp_path / "py.icechunk"

    # CLI: a build and an update with --debug, the key and the AWS credentials in the environment
    base = [*request_args(stac_url), "--store", str(cli_store), "--statistics"]
    p = cli(secrets_env, "build", *base, "--start", "2024-01-01", "--end", "2024-01-12")
    assert p.returncode == 0, p.stderr[-3000:]
    texts += [("cli build stdout", p.stdout), ("cli build stderr", p.stderr)]
    p = cli(secrets_env, "update", "--store", str(cli_store), "--end", "2024-01-31")
    assert p.returncode == 0, p.stderr[-3000:]
    texts += [("cli update stdout", p.stdout), ("cli update stderr", p.stderr)]

    # CLI: a run that fails reading a signed asset (signed with the key, the read refused)
    p = cli(secrets_env, "build", *request_args(stac_url, BLOB_COLLECTION),
            "--store", str(tmp_path / "cli-fail.icechunk"),
            "--start", "2024-01-01", "--end", "2024-01-31")  # fmt: skip
    assert p.returncode != 0
    texts += [("cli failing stdout", p.stdout), ("cli failing stderr", p.stderr)]

    # Python: a build with the key from a Prefect Secret block, an update, a failing run
    kwargs = dict(
        mission="sentinel-2-l2a", bbox=list(demo_bbox()), catalog=stac_url, bands=["red"],
        pc_key_block=BLOCK_NAME, statistics=True,
    )  # fmt: skip
    get_stac_layers(**kwargs, collection=C1, store=str(py_store),
                    start="2024-01-01", end="2024-01-12")  # fmt: skip
    update_cube(store=str(py_store), end="2024-01-31")
    TOKEN_REQUESTS.clear()
    with pytest.raises(Stac2CubeError) as err:
        get_stac_layers(**kwargs, collection=BLOB_COLLECTION,
                        store=str(tmp_path / "py-fail.icechunk"),
                        start="2024-01-01", end="2024-01-31")  # fmt: skip
    assert TOKEN_REQUESTS and {key for _, key in TOKEN_REQUESTS} == {
        BLOCK_KEY
    }  # it did sign, with the key
    chain, exc = [], err.value
    while exc is not None:
        chain.append(f"{type(exc).__name__}: {exc!s} {exc!r}")
        exc = exc.__cause__ or exc.__context__
    texts.append(("python error (and its chain)", "\n".join(chain)))
    assert "blob.core.windows.net" in texts[-1][1]  # the error names the asset...
    texts.append(("python logs", caplog.text))
    texts += [(f"log record of {r.name}", r.getMessage()) for r in caplog.records]

    # the cubes' attributes, and every byte of the stores and the files beside them
    for store in (cli_store, py_store):
        ds = open_cube(str(store))
        attrs = [ds.attrs, *(v.attrs for v in ds.variables.values())]
        texts.append((f"attrs of {store.name}", json.dumps(attrs, default=str)))
    sidecars = [p for p in tmp_path.iterdir() if p.suffix in (".json", ".csv")]
    assert {p.name for p in sidecars} >= {"cli.settings.json", "cli.stats.csv",
                                          "py.settings.json", "py.stats.csv"}  # fmt: skip
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 20

    texts += prefect_records()
    assert any(what.startswith("artifact") for what, _ in texts)
    found = [(what, context(text)) for what, text in texts if leaks(text)]
    found += [(str(f), context(f.read_bytes())) for f in files if leaks(f.read_bytes())]
    assert not found, f"secrets leaked into: {found}"
