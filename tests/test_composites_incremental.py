"""Composites after an update: only the periods the run touched are recomputed and written.

A private collection of the session's STAC API holds two scenes a month (January-March 2024);
tests add a late scene, a reprocessed one and a new month. Expected composites are computed
with numpy from the pixels the cube holds; what was written is read from icechunk's diff of the
update's commit (chunks per array), not from stac2cube.
"""

from __future__ import annotations

import datetime as dt
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import small_bbox

from stac2cube import get_stac_layers, open_cube
from stac2cube.composites import open_composites
from stac2cube.store import head_snapshot, open_repo
from stac2cube.testing.synthetic import TILE_A, SceneSpec, make_collection, make_item, write_catalog

pytestmark = pytest.mark.integration

COLLECTION = "composites-incremental-s2"
DAYS = ["2024-01-05", "2024-01-20", "2024-02-05", "2024-02-20", "2024-03-05", "2024-03-20"]
COMPOSITES = ["median:month", "max:season", "mean:all", "max:all"]
REDUCERS = {"median": np.nanmedian, "mean": np.nanmean, "max": np.nanmax}


def scene(day: str, seed: int, **kw) -> SceneSpec:
    when = dt.datetime.fromisoformat(f"{day}T10:30:21").replace(tzinfo=dt.UTC)
    return SceneSpec(
        TILE_A[0], TILE_A[1], TILE_A[2], when, size=60, seed=seed, collection=COLLECTION, **kw
    )


@pytest.fixture(scope="module")
def base(stac_api, tmp_path_factory):
    """The January-March cube with composites of three period kinds, and the catalog root."""
    root = tmp_path_factory.mktemp("composites-incremental")
    cat = write_catalog(root, [scene(d, 40 + k) for k, d in enumerate(DAYS)], bands=["B04"])
    stac_api.load_collections([make_collection("earth-search-c1", COLLECTION, cat.items)])
    stac_api.load_items(cat.items)
    store = root / "base.icechunk"
    build(stac_api.url, store, "2024-01-01", "2024-03-31")
    return store, root


def build(url: str, store, start: str, end: str) -> dict:
    return get_stac_layers(
        mission="sentinel-2-l2a", bbox=small_bbox(), start=start, end=end, catalog=url,
        collection=COLLECTION, bands=["B04"], store=str(store), composites=COMPOSITES,
        statistics=False,
    )  # fmt: skip


def period_of(t: pd.Timestamp, period: str) -> pd.Timestamp:
    """Period start written out from the documented calendar rules."""
    if period == "month":
        return pd.Timestamp(t.year, t.month, 1)
    if t.month == 12:  # season: December opens the winter
        return pd.Timestamp(t.year, 12, 1)
    if t.month <= 2:
        return pd.Timestamp(t.year - 1, 12, 1)
    return pd.Timestamp(t.year, (t.month // 3) * 3, 1)


def expected(cube, period: str, label: pd.Timestamp, stat: str):
    """(stat, count) of B04 over the cube's steps of one period, with numpy."""
    times = pd.DatetimeIndex(cube.time.values)
    pick = [i for i, t in enumerate(times) if period == "all" or period_of(t, period) == label]
    stack = cube.B04.values[pick]
    with warnings.catch_warnings():  # all-NaN pixels are NaN, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        return REDUCERS[stat](stack, axis=0), np.isfinite(stack).sum(axis=0)


def written_periods(store, before: str, after: str, group: str) -> dict[str, set[int]]:
    """Period indices of the chunks the commit ``after`` wrote, per data variable of ``group``.

    A variable the commit created anew (the whole group rewritten) counts as all periods.
    """
    repo = open_repo(store)
    diff = repo.diff(from_snapshot_id=before, to_snapshot_id=after)
    comp = open_composites(store, group.rsplit("/", 1)[1])
    out: dict[str, set[int]] = {}
    for name in comp.data_vars:
        path = f"/{group}/{name}"
        if path in diff.new_arrays:
            out[name] = set(range(comp.sizes["period"]))
        else:
            out[name] = {int(c[0]) for c in diff.updated_chunks.get(path, [])}
    return out


def created_arrays(store, before: str, after: str) -> set[str]:
    """Arrays the commit ``after`` created (a group rewritten as a whole is created anew)."""
    diff = open_repo(store).diff(from_snapshot_id=before, to_snapshot_id=after)
    return set(diff.new_arrays)


def check_touched(cube, store, period: str, stat: str, labels: list[pd.Timestamp]) -> None:
    comp = open_composites(store, period).load()
    for label in labels:
        want, count = expected(cube, period, label, stat)
        got = comp.sel(period=label)
        np.testing.assert_allclose(
            got[f"B04_{stat}"].values, want, rtol=1e-6, atol=1e-7, equal_nan=True
        )
        np.testing.assert_array_equal(got.B04_count.values, count)


def check_untouched(old, store, period: str, labels: list[pd.Timestamp]) -> None:
    new = open_composites(store, period).load()
    for label in labels:
        for name in old.data_vars:
            np.testing.assert_array_equal(
                new[name].sel(period=label).values, old[name].sel(period=label).values
            )


@pytest.fixture()
def cube_copy(base, tmp_path):
    store = tmp_path / "cube.icechunk"
    shutil.copytree(base[0], store)
    return store


def test_a_late_scene_recomputes_only_its_month_and_season(stac_api, base, cube_copy):
    _, root = base
    old_month = open_composites(cube_copy, "month").load()
    old_season = open_composites(cube_copy, "season").load()
    before = head_snapshot(cube_copy)
    late = make_item(scene("2024-02-12", 60, nodata_cols=30), root / "late", ["B04"])
    stac_api.load_items([late])
    s = build(stac_api.url, cube_copy, "2024-02-01", "2024-02-29")
    assert (s["added_time_steps"], s["replaced_time_steps"], s["time_steps"]) == (1, 0, 7)
    cube = open_cube(cube_copy).load()
    feb, djf, mam = pd.Timestamp("2024-02-01"), pd.Timestamp("2023-12-01"), pd.Timestamp("2024-03")

    check_touched(cube, cube_copy, "month", "median", [feb])
    check_untouched(old_month, cube_copy, "month", [pd.Timestamp("2024-01-01"), mam])
    check_touched(cube, cube_copy, "season", "max", [djf])
    check_untouched(old_season, cube_copy, "season", [mam])
    for stat in ("mean", "max"):  # an addition: `all` is updated from the new step alone
        check_touched(cube, cube_copy, "all", stat, [pd.Timestamp("2024-01-05")])
    # the late scene's nodata strip shows in February's counts (the check is not vacuous)
    counts = open_composites(cube_copy, "month").B04_count.sel(period=feb).values
    assert counts.min() == 2 and counts.max() == 3

    after = head_snapshot(cube_copy)
    month = written_periods(cube_copy, before, after, "composites/month")
    assert month == {"B04_median": {1}, "B04_count": {1}}  # February only
    season = written_periods(cube_copy, before, after, "composites/season")
    assert season == {"B04_max": {0}, "B04_count": {0}}  # the winter only
    assert not created_arrays(cube_copy, before, after)  # `all` too was updated in place


def test_a_reprocessed_scene_and_a_new_month(stac_api, base, cube_copy):
    _, root = base
    old_month = open_composites(cube_copy, "month").load()
    before = head_snapshot(cube_copy)
    reprocessed = scene(
        "2024-03-05", 77, baseline="05.11", generation_time=dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    )
    items = [make_item(s, root / "update", ["B04"]) for s in (reprocessed, scene("2024-04-10", 78))]
    stac_api.load_items(items)
    s = build(stac_api.url, cube_copy, "2024-03-01", "2024-04-30")
    assert (s["added_time_steps"], s["replaced_time_steps"], s["time_steps"]) == (1, 1, 7)
    cube = open_cube(cube_copy).load()
    mar, apr = pd.Timestamp("2024-03-01"), pd.Timestamp("2024-04-01")

    comp = open_composites(cube_copy, "month")
    assert list(pd.DatetimeIndex(comp.period.values)) == [
        pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01"), mar, apr
    ]  # fmt: skip
    assert list(pd.DatetimeIndex(comp.period_end.values))[-1] == pd.Timestamp("2024-04-30")
    assert comp.attrs["stac2cube:time_steps"] == 7
    check_touched(cube, cube_copy, "month", "median", [mar, apr])
    check_untouched(
        old_month, cube_copy, "month", [pd.Timestamp("2024-01-01"), mar - pd.DateOffset(months=1)]
    )
    for stat in ("mean", "max"):  # a replacement: `all` is recomputed from the whole cube
        check_touched(cube, cube_copy, "all", stat, [pd.Timestamp("2024-01-05")])
    assert open_composites(cube_copy, "all").period_end.values[0] == np.datetime64("2024-04-10")

    after = head_snapshot(cube_copy)
    month = written_periods(cube_copy, before, after, "composites/month")
    assert month == {"B04_median": {2, 3}, "B04_count": {2, 3}}  # March and the new April
    assert "/composites/all/B04_mean" in created_arrays(cube_copy, before, after)


def test_a_month_before_the_cube_rewrites_the_month_group(stac_api, base, cube_copy):
    _, root = base
    before = head_snapshot(cube_copy)
    stac_api.load_items([make_item(scene("2023-12-15", 79), root / "december", ["B04"])])
    s = build(stac_api.url, cube_copy, "2023-12-01", "2023-12-31")
    assert (s["added_time_steps"], s["time_steps"]) == (1, 7)
    cube = open_cube(cube_copy).load()
    months = [pd.Timestamp(2023, 12, 1)] + [pd.Timestamp(2024, m, 1) for m in (1, 2, 3)]
    assert list(pd.DatetimeIndex(open_composites(cube_copy, "month").period.values)) == months
    check_touched(cube, cube_copy, "month", "median", months)
    check_touched(cube, cube_copy, "season", "max", [pd.Timestamp("2023-12-01")])
    for stat in ("mean", "max"):
        check_touched(cube, cube_copy, "all", stat, [pd.Timestamp("2023-12-15")])
    # a new period before the stored ones: that group is rewritten; the others in place
    created = created_arrays(cube_copy, before, head_snapshot(cube_copy))
    assert "/composites/month/B04_median" in created
    assert not {a for a in created if a.startswith(("/composites/season", "/composites/all"))}
