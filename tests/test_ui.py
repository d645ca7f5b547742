"""The Prefect UI as a user meets it (issue 17): a real ``prefect server`` with its UI, the
deployments of ``deployments/prefect.yaml``, a process worker started outside the checkout,
and Debian's headless Chromium driving the build-cube Custom run form: type a catalog URL,
pick dates, fill the bbox (one number is refused first), submit; the run completes against the
local STAC API. Screenshots of the form, the run and its artifacts go to ``ci-artifacts/ui/``
(``STAC2CUBE_UI_ARTIFACTS`` overrides it), which CI keeps.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import ui_support as ui
from conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _selenium():
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
    except ImportError:  # pragma: no cover - the test extra installs selenium
        return None
    return By, Keys


def _require_browser() -> None:
    require(Path(ui.CHROMIUM).exists(), "chromium missing (apt: chromium)")
    require(Path(ui.CHROMEDRIVER).exists(), "chromedriver missing (apt: chromium-driver)")
    require(_selenium() is not None, "selenium missing (the test extra)")


def _prop(driver, name: str):
    """The form block of parameter ``name`` (labelled "name" or "name (Optional)")."""
    from selenium.webdriver.common.by import By

    xpath = (
        "//span[contains(@class,'schema-form-property__label')]"
        f"[normalize-space()='{name}' or normalize-space()='{name} (Optional)']"
        "/ancestor::div[contains(@class,'schema-form-property')][contains(@class,'p-label')][1]"
    )
    return driver.find_element(By.XPATH, xpath)


def _type(element, text: str) -> None:
    """Select what is there and type ``text`` key by key, as a user does."""
    from selenium.webdriver.common.keys import Keys

    element.click()
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    for char in text:
        element.send_keys(char)


def _add_items(driver, name: str, values: list[str]) -> None:
    from selenium.webdriver.common.by import By

    block = _prop(driver, name)
    for value in values:
        before = len(block.find_elements(By.CSS_SELECTOR, "input, textarea"))
        block.find_element(By.XPATH, ".//button[contains(normalize-space(),'Add item')]").click()
        _wait(lambda b=before: len(block.find_elements(By.CSS_SELECTOR, "input, textarea")) > b)
        _type(block.find_elements(By.CSS_SELECTOR, "input, textarea")[-1], value)


def _pick_date(driver, name: str, iso: str) -> None:
    """Type the date into the browser's date input (month, day, year: en-US)."""
    from selenium.webdriver.common.by import By

    field = _prop(driver, name).find_element(By.CSS_SELECTOR, "input[type=date]")
    year, month, day = iso.split("-")
    field.click()
    field.send_keys(month + day + year)
    assert field.get_attribute("value") == iso, (name, field.get_attribute("value"))


def _submit(driver) -> None:
    """Leave the field being typed in (its change is committed on blur), then press Submit."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.TAG_NAME, "h3").click()  # "Start": a neutral spot
    time.sleep(1)
    button = driver.find_element(
        By.XPATH, "//button[@type='submit'][contains(normalize-space(),'Submit')]"
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    time.sleep(0.5)
    button.click()


def _wait(condition, timeout: float = 30, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {condition}")
        time.sleep(every)


def _shot(driver, name: str, height: int | None = None) -> Path:
    """A full-height screenshot under ci-artifacts/ui/."""
    ui.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if height is None:
        height = driver.execute_script(
            "return Math.max(document.body.scrollHeight,"
            " document.documentElement.scrollHeight, 1000)"
        )
    driver.set_window_size(1400, min(int(height) + 200, 12000))
    time.sleep(0.5)
    path = ui.ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def _form_height(driver) -> int:
    """The run form scrolls inside the page: the height of its scrolling content."""
    return driver.execute_script(
        "let h = document.documentElement.scrollHeight;"
        "for (const e of document.querySelectorAll('*')) {"
        "  if (e.scrollHeight > e.clientHeight + 50) h = Math.max(h, e.scrollHeight); }"
        "return h;"
    )


def _runs(client, deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )


def test_build_cube_from_the_custom_run_form(stac_url, tmp_path):
    _require_browser()
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from selenium.webdriver.common.by import By

    from stac2cube import cube_info
    from stac2cube.testing.synthetic import demo_bbox

    home = Path(tempfile.mkdtemp(prefix="stac2cube-ui-"))
    store = tmp_path / "ui-form.icechunk"
    bbox = [round(v, 5) for v in demo_bbox()]
    if ui.ARTIFACTS.exists():
        shutil.rmtree(ui.ARTIFACTS)
    driver = None
    try:
        with ui.prefect_server(home) as env:
            url = env["STAC2CUBE_UI_URL"]
            ui.prefect(env, "block", "register", "-m", "stac2cube.blocks", cwd=home)
            ui.prefect(env, "work-pool", "create", "stac2cube", "--type", "process", cwd=home)
            with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
                from stac2cube.blocks import CubeStore

                CubeStore(path=str(tmp_path / "nightly.icechunk")).save("nightly-cube")
                # deployed from outside the checkout: nothing may point back at it
                ui.prefect(
                    env, "deploy", "--prefect-file", str(ui.PREFECT_YAML), "--all",
                    "--no-prompt", cwd=home,
                )  # fmt: skip
                with get_client(sync_client=True) as client:
                    deployment = client.read_deployment_by_name("get-stac-layers/build-cube")
                assert not deployment.pull_steps  # no set_working_directory: <checkout>
                assert str(ui.ROOT) not in json.dumps(deployment.model_dump(mode="json"))
                assert deployment.enforce_parameter_schema

                with ui.process_worker(env, home):
                    driver = ui.chrome()
                    driver.get(f"{url}/deployments")
                    _wait(lambda: "nightly-update" in driver.page_source)
                    _wait(lambda: "Europe/Berlin" in driver.page_source)
                    _shot(driver, "01-deployments", 900)

                    driver.get(f"{url}/deployments/deployment/{deployment.id}/run")
                    _wait(lambda: driver.find_elements(By.XPATH, "//button[@type='submit']"))
                    form_labels = [
                        e.text
                        for e in driver.find_elements(
                            By.CSS_SELECTOR, "span.schema-form-property__label"
                        )
                    ]
                    # item 2: store is required, nothing opens on "Property is type None"
                    assert "store" in form_labels and "bbox (Optional)" in form_labels
                    assert "Property is type None" not in driver.page_source

                    _type(_prop(driver, "store").find_element(By.TAG_NAME, "textarea"), str(store))
                    catalog = _prop(driver, "catalog").find_element(By.TAG_NAME, "textarea")
                    _type(catalog, stac_url)  # item 1: key by key, the field keeps every key
                    assert catalog.get_attribute("value") == stac_url
                    collection = _prop(driver, "collection").find_element(By.TAG_NAME, "textarea")
                    _type(collection, "sentinel-2-c1-l2a")
                    _pick_date(driver, "start", "2024-01-01")
                    _pick_date(driver, "end", "2024-01-15")
                    _add_items(driver, "bands", ["red", "nir", "SCL"])

                    # item 3: one number is refused; no run is created
                    _add_items(driver, "bbox", [str(bbox[0])])
                    _submit(driver)
                    time.sleep(3)
                    _shot(driver, "02-form-bbox-of-one-number-refused", _form_height(driver))
                    assert "/run" in driver.current_url and "/flow-run/" not in driver.current_url
                    with get_client(sync_client=True) as client:
                        assert _runs(client, deployment.id) == []
                    assert "bbox" in driver.page_source

                    _add_items(driver, "bbox", [str(v) for v in bbox[1:]])
                    _shot(driver, "03-form-filled", _form_height(driver))
                    _submit(driver)
                    # the UI goes back to the deployment page (or to the run) with a toast
                    with get_client(sync_client=True) as client:
                        try:
                            (run,) = _wait(lambda: _runs(client, deployment.id), timeout=180)
                        except AssertionError:
                            _shot(driver, "03b-form-not-submitted", _form_height(driver))
                            raise
                    run_id = str(run.id)

                    with get_client(sync_client=True) as client:
                        run = client.read_flow_run(run_id)
                        assert run.parameters["catalog"] == stac_url
                        assert run.parameters["store"] == str(store)
                        assert [float(v) for v in run.parameters["bbox"]] == bbox
                        assert run.parameters["start"] == "2024-01-01"
                        assert run.parameters["bands"] == ["red", "nir", "SCL"]

                        def finished():
                            state = client.read_flow_run(run_id).state
                            return state if state.is_final() else None

                        final = _wait(finished, timeout=420, every=2)
                    assert final.is_completed(), (
                        f"{final}\n{(home / 'worker.log').read_text()[-4000:]}"
                    )
                    info = cube_info(store)
                    assert info["bands"] == ["B04", "B08", "SCL"]
                    assert len(info["time_steps"]) >= 1
                    assert (tmp_path / "ui-form.collection.json").exists()

                    driver.get(f"{url}/runs/flow-run/{run_id}")
                    _wait(lambda: "Completed" in driver.page_source, timeout=60)
                    _shot(driver, "04-run", 1400)
                    tabs = driver.find_elements(
                        By.XPATH, "//*[normalize-space(text())='Artifacts']"
                    )
                    if tabs:  # the run page's Artifacts tab (best effort: a picture for people)
                        tabs[-1].click()
                        time.sleep(3)
                        _shot(driver, "05-run-artifacts", 1400)
                    driver.get(f"{url}/artifacts")
                    _wait(lambda: "cube-ui-form-report" in driver.page_source, timeout=60)
                    _shot(driver, "05-artifacts", 1400)
                    with get_client(sync_client=True) as client:
                        from prefect.client.schemas.filters import (
                            ArtifactFilter,
                            ArtifactFilterFlowRunId,
                        )

                        artifacts = client.read_artifacts(
                            artifact_filter=ArtifactFilter(
                                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
                            )
                        )
                    by_key = {a.key: a for a in artifacts}
                    assert {
                        "cube-ui-form-report",
                        "cube-ui-form-time-steps",
                        "cube-ui-form-quicklook",
                        "cube-ui-form-progress",
                    } <= set(by_key)
                    rows = json.loads(by_key["cube-ui-form-time-steps"].data)
                    assert all(r["cloud_fraction"] is not None for r in rows)
                    for key, name in (
                        ("cube-ui-form-report", "06-artifact-report"),
                        ("cube-ui-form-time-steps", "07-artifact-time-steps"),
                        ("cube-ui-form-quicklook", "08-artifact-quicklook"),
                    ):
                        driver.get(f"{url}/artifacts/artifact/{by_key[key].id}")
                        _wait(lambda k=key: k in driver.page_source, timeout=60)
                        time.sleep(1)
                        _shot(driver, name)
                    # item 6: the quicklook page shows the picture, not its data: URL as text
                    images = driver.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png']")
                    assert images, "no quicklook picture on its artifact page"
                    assert (
                        "data:image/png;base64" not in driver.find_element(By.TAG_NAME, "body").text
                    )
    finally:
        if driver is not None:
            driver.quit()
        for log in ("server.log", "worker.log"):
            if (home / log).exists():
                ui.ARTIFACTS.mkdir(parents=True, exist_ok=True)
                shutil.copy(home / log, ui.ARTIFACTS / log)
        shutil.rmtree(home, ignore_errors=True)
        os.environ.pop("STAC2CUBE_UI_URL", None)
