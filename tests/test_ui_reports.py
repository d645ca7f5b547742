"""What a run shows in the Prefect UI (issue 17 items 5 and 6): the artifacts of the run a user
opens, the time-steps table's cloud fraction, a quicklook without its data URL as text."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from stac2cube.flows.report import artifact_key, quicklook_markdown

pytestmark = pytest.mark.integration


def _artifacts(run_id, key: str | None = None) -> list:
    """The artifacts of one flow run (optionally of one key)."""
    filt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    if key:
        filt.key = ArtifactFilterKey(any_=[key])
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=filt)


@pytest.fixture(scope="module")
def scl_cube(stac_url, tmp_path_factory):
    """A January cube with SCL among its bands (so its cloud fraction is known)."""
    from stac2cube import get_stac_layers
    from stac2cube.testing.synthetic import demo_bbox

    store = tmp_path_factory.mktemp("reports") / "scl.icechunk"
    state = get_stac_layers(
        mission="sentinel-2-l2a",
        bbox=list(demo_bbox()),
        start="2024-01-01",
        end="2024-01-31",
        catalog=stac_url,
        collection="sentinel-2-c1-l2a",
        bands=["red", "green", "blue", "SCL"],
        store=str(store),
        return_state=True,
    )
    return store, state


def _cloud_fractions(store) -> dict[str, float]:
    """Independently: per step, the share of valid pixels with an SCL value that SCL flags as
    cloud or shadow (the default classes 1 3 8 9 10)."""
    from stac2cube import open_cube

    ds = open_cube(store).load()
    out = {}
    for k in range(ds.sizes["time"]):
        step = ds.isel(time=k)
        scl = step.SCL.values
        judged = np.isfinite(step.B04.values) & (scl != 0)
        cloud = np.isin(scl, [1, 3, 8, 9, 10]) & judged
        out[str(np.datetime_as_string(ds.time.values[k], unit="s"))] = cloud.sum() / judged.sum()
    return out


def test_time_step_table_fills_cloud_fraction(scl_cube):
    store, state = scl_cube
    run_id = state.state_details.flow_run_id
    (table,) = _artifacts(run_id, artifact_key(str(store), "time-steps"))
    rows = json.loads(table.data)
    expected = _cloud_fractions(store)
    assert len(rows) == len(expected) >= 1
    for row in rows:
        assert row["cloud_fraction"] is not None, row
        assert row["cloud_fraction"] == pytest.approx(expected[row["time"][:19]], abs=1e-6)
        assert 0 < row["valid_fraction"] <= 1
    (md,) = _artifacts(run_id, artifact_key(str(store), "report"))
    assert "cloud fraction |" in md.data
    assert re.search(r"Added \d+ time steps?\*\*", md.data)


def test_quicklook_is_a_picture_not_its_url(scl_cube):
    """A markdown artifact with the picture inline: no image artifact (whose page prints the
    URL, here the whole data: URL, under the picture)."""
    from PIL import Image

    store, state = scl_cube
    run_id = state.state_details.flow_run_id
    (quicklook,) = _artifacts(run_id, artifact_key(str(store), "quicklook"))
    assert quicklook.type == "markdown"
    assert not [a for a in _artifacts(run_id) if a.type == "image"]
    match = re.fullmatch(
        r"!\[([^\]]+)\]\(data:image/png;base64,([^)]+)\)\n\n\*\1\*\n", quicklook.data
    )
    assert match, quicklook.data[:200]
    png = Image.open(io.BytesIO(base64.b64decode(match.group(2))))
    assert png.format == "PNG" and png.mode == "RGBA"
    assert quicklook_markdown(b"abc", "x") == "![x](data:image/png;base64,YWJj)\n\n*x*\n"


def test_nightly_update_run_shows_its_outcome(scl_cube):
    """The update_cube run itself (not only its get-stac-layers subflow) carries the report:
    nothing new here, with the summary as its return value."""
    from stac2cube.flows.update import update_cube

    store, _ = scl_cube
    state = update_cube(store=str(store), end="2024-01-31", return_state=True)
    summary = state.result()
    assert summary["snapshot"] is None and summary["added_time_steps"] == 0
    run_id = state.state_details.flow_run_id
    by_key = {a.key: a for a in _artifacts(run_id)}
    report = by_key[artifact_key(str(store), "report")]
    assert report.data.startswith(f"# Cube update: `{store}`")
    assert "**Nothing new**" in report.data
    assert artifact_key(str(store), "time-steps") in by_key
    assert by_key[artifact_key(str(store), "quicklook")].type == "markdown"
