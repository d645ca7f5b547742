"""Benchmark: a one-step update of a cube with composites, at 50 and at 200 time steps.

Run (from the repository root; about 5 minutes on 2 cores with the defaults)::

    .venv/bin/python bench/composites_update.py                      # N = 50 200, 3 repeats
    .venv/bin/python bench/composites_update.py --sizes 5 20 --repeat 1 --px 128   # smoke run

What is measured, for every N of ``--sizes`` (one process, the sizes interleaved per repeat):

``update``          ``get_stac_layers(start=day N, end=day N, store=<copy of the N-step cube>)``:
                    the whole incremental update of a cube kept with the composites
                    ``--composites`` (search, plan, load and write the one new step, the
                    composites of the periods it touched, one commit), Prefect flow heartbeats
                    off (as ``stac2cube-nohb`` in ``bench/append.py``).
``composites new``  the composites step inside that update: the ``write_composites(session,
                    specs, touched)`` call of the flow, timed by a wrapper this script puts
                    around it (the periods of the new step only).
``composites old``  after the update, ``write_composites(session, specs)`` (``touched=None``) in
                    a writable session of the updated cube (discarded, not committed): every
                    group recomputed from the whole cube, as every update did before (issue 10,
                    item 13). ``update with old composites`` = update - new + old.

Both composites results are compared (the groups written by the update against the full
recomputation: equal counts and values, mean to float32 precision).

The catalog and the base cubes are made as in ``bench/append.py`` (its helpers and ``bench/_common.py``'s are imported):
a synthetic ``sentinel-2-c1-l2a`` tile with one scene a day from 2024-06-01, served by a real
local STAC API; N-step cubes hold days 0..N-1, built once with the composites (not timed). The
new step is day N: with the defaults it falls in July (N = 50, a month of 20 steps) or in
December (N = 200, 17 steps), so both updates recompute one month of about the same length.

Writes ``bench/RESULTS_composites.md`` (keeping its ``## Interpretation`` section), with the
machine's load average before and after: the machine is shared, so say what else ran.
Timing is never part of the pytest suite; this script is run by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402  (the benchmarks' shared catalog, worker and report helpers)
import append  # noqa: E402  (the append benchmark's days, grid and tile sizes)

RESULTS = HERE / "RESULTS_composites.md"
DEFAULT_WORKDIR = HERE / "out" / "composites"
DEFAULT_COMPOSITES = ["median:month", "mean:all", "max:all"]
INTERPRETATION_START = "## Interpretation"


def update_kwargs(job: dict[str, Any], store: Path, n: int) -> dict[str, Any]:
    """``get_stac_layers`` arguments that add day ``n`` to ``store``."""
    return append.flow_kwargs(job, str(store), append.day(n).isoformat(), append.day(n).isoformat())


def timed(fn) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def full_composites(store: Path, specs: list[str]) -> float:
    """Seconds of ``write_composites`` of the whole cube in a session of ``store`` (discarded)."""
    from stac2cube.composites import write_composites
    from stac2cube.store import open_repo

    session = open_repo(store).writable_session("main")
    seconds, _ = timed(lambda: write_composites(session, specs))
    session.discard_changes()
    return seconds


class TimedComposites:
    """Times every ``stac2cube.composites.write_composites`` call made while it is active."""

    def __enter__(self) -> list[float]:
        import stac2cube.composites as module

        self.module, self.original, self.seconds = module, module.write_composites, []

        def wrapper(*args, **kwargs):
            seconds, out = timed(lambda: self.original(*args, **kwargs))
            self.seconds.append(seconds)
            return out

        module.write_composites = wrapper
        return self.seconds

    def __exit__(self, *exc: object) -> None:
        self.module.write_composites = self.original


def check_against_full(store: Path, specs: list[str]) -> None:
    """The committed composites equal a full recomputation (raises AssertionError if not)."""
    import numpy as np
    import xarray as xr

    from stac2cube.composites import open_composites, write_composites
    from stac2cube.store import open_repo

    session = open_repo(store).writable_session("main")
    for group in write_composites(session, specs):
        full = xr.open_zarr(session.store, group=group, consolidated=False).load()
        kept = open_composites(store, group.split("/")[1]).load()
        assert list(full.period.values) == list(kept.period.values), group
        for name in full.data_vars:
            np.testing.assert_allclose(
                kept[name].values, full[name].values, rtol=1e-6, equal_nan=True, err_msg=name
            )
    session.discard_changes()


def measure(job: dict[str, Any], cubes: dict[int, Path], specs: list[str], repeat: int, work: Path):
    """Per N: the update's and both composites steps' seconds, and the load averages."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from stac2cube import get_stac_layers

    runs: dict[int, list[dict[str, float]]] = {n: [] for n in cubes}
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for base in cubes.values():  # warm-up: nothing new (starts Prefect, searches once)
            get_stac_layers(**update_kwargs(job, base, 0))
        for k in range(repeat):
            for n, base in cubes.items():
                copy = work / f"update-{n}-{k}.icechunk"
                shutil.copytree(base, copy)
                load = os.getloadavg()[0]
                with TimedComposites() as calls:
                    seconds, summary = timed(
                        lambda: get_stac_layers(**update_kwargs(job, copy, n))  # noqa: B023
                    )
                if (summary["added_time_steps"], summary["time_steps"], len(calls)) != (
                    1,
                    n + 1,
                    1,
                ):
                    raise RuntimeError(f"update of the {n}-step cube: {summary}, {calls}")
                new = calls[0]
                old = full_composites(copy, specs)
                if k == 0:
                    check_against_full(copy, specs)
                runs[n].append({"update": seconds, "new": new, "old": old, "load": load})
                print(f"N={n} repeat {k}: update {seconds:.2f} s, composites new {new:.2f} s, "
                      f"old {old:.2f} s (load {load:.2f})")  # fmt: skip
                shutil.rmtree(copy)
    return runs


def report(runs, sizes, specs, header: list[str]) -> str:
    def med(n: int, key: str) -> float:
        return statistics.median(r[key] for r in runs[n])

    def span(n: int, key: str) -> str:
        values = [r[key] for r in runs[n]]
        return f"{min(values):.2f}-{max(values):.2f}"

    lines = [
        *header,
        "",
        "| N (steps before) | update s (median) | min-max | composites new s | composites old s "
        "| old / new | update with old composites s (derived) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        derived = med(n, "update") - med(n, "new") + med(n, "old")
        lines.append(
            f"| {n} | {med(n, 'update'):.2f} | {span(n, 'update')} | {med(n, 'new'):.2f} "
            f"| {med(n, 'old'):.2f} | {append.fmt_ratio(med(n, 'old'), med(n, 'new'), 1)} "
            f"| {derived:.2f} |"
        )
    small, large = sizes[0], sizes[-1]
    lines += ["", f"Growth from N = {small} to N = {large} (same run, medians):", ""]
    for key, what in (
        ("update", "update (whole run)"),
        ("new", "composites step, touched periods only (now)"),
        ("old", "composites step, whole cube (before)"),
    ):
        lines.append(
            f"* {what}: t({large}) / t({small}) = "
            f"{append.fmt_ratio(med(large, key), med(small, key))} "
            f"({med(large, key):.2f} s / {med(small, key):.2f} s)"
        )
    loads = [r["load"] for n in sizes for r in runs[n]]
    lines.append(f"* load average (1 min) before each update: {min(loads):.2f}-{max(loads):.2f}")
    lines.append(f"* composites: `{' '.join(specs)}`")
    return "\n".join(lines)


def previous_interpretation() -> str:
    if not RESULTS.exists():
        return ""
    text = RESULTS.read_text()
    at = text.find(INTERPRETATION_START)
    return text[at:].strip() if at >= 0 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--bands", type=int, default=2, choices=range(1, 5))
    parser.add_argument("--px", type=int, default=512, help="cube width and height (10 m px)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--composites", nargs="+", default=DEFAULT_COMPOSITES)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
    sizes = sorted(set(args.sizes))
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.update(append.worker_env(work / "prefect-home"))
    (work / "prefect-home").mkdir()

    from stac2cube import get_stac_layers
    from stac2cube.composites import parse_composites
    from stac2cube.testing.pgstac import start_local_stac_api

    specs = list(parse_composites(args.composites))
    command = " ".join(
        [".venv/bin/python bench/composites_update.py", *(sys.argv[1:] if argv is None else argv)]
    )
    started = dt.datetime.now(dt.UTC)
    machine_line = append.machine()
    tree = append.tree_state()
    bands = append.TEN_M_BANDS[: args.bands]
    catalog = _common.write_scenes(
        work / "catalog", sizes[-1] + 1, append.tile_size(args.px), bands
    )
    bounds, epsg = append.grid_bounds(args.px)
    job = {"bbox": _common.bbox_for_bounds(bounds, epsg), "bands": bands, "epsg": epsg}
    with start_local_stac_api(collections=catalog.collections, items=catalog.items) as api:
        job["url"] = api.url
        cubes, builds = {}, {}
        for n in sizes:
            cubes[n] = work / f"base-{n}.icechunk"
            kwargs = append.flow_kwargs(
                job, str(cubes[n]), append.day(0).isoformat(), append.day(n - 1).isoformat()
            )
            builds[n], _ = timed(lambda: get_stac_layers(**kwargs, composites=specs))  # noqa: B023
        runs = measure(job, cubes, specs, args.repeat, work)
    end_load = os.getloadavg()[0]
    header = [
        "# Updating a cube with composites: cost at growing cube length",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC on {machine_line}; load average {end_load:.2f} at "
        "the end. The machine is shared (2 cores, other engineers' tests and builds may run "
        "at the same time): see the load averages below.",
        "",
        f"Command: `{command}`",
        "",
        f"Data: one scene a day from {append.day(0)}, {len(bands)} bands ({' '.join(bands)}), "
        f"cube grid {args.px}x{args.px} px at 10 m (EPSG:{epsg}); base cubes of N steps built "
        "once with the composites ("
        + ", ".join(f"N = {n}: {builds[n]:.0f} s" for n in sizes)
        + f"); each update adds day N to a fresh copy. Medians over {args.repeat} repeats.",
        "",
        f"Versions: {append.versions()}; tree measured: {tree}.",
        "",
        "The composites the update wrote were checked against a full recomputation (equal).",
    ]
    text = report(runs, sizes, specs, header)
    print(text)
    if not args.no_results:
        interpretation = previous_interpretation() or (
            f"{INTERPRETATION_START}\n\n(To be written by hand after a run; kept across runs.)"
        )
        RESULTS.write_text(f"{text}\n\n{interpretation}\n")
        print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
