"""The ``stac2cube`` command line: thin wrappers around the flows and the cube store.

Every command returns an exit code. Errors print one line (``error: ...``) as the last line on
stderr and exit non-zero; ``--debug`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

EXIT_ERROR = 2
#: exit code of an error stac2cube does not name (a bug, or a library failing unforeseen)
EXIT_UNEXPECTED = 1

BUILD_EPILOG = """\
examples:
  stac2cube build --mission sentinel-2-l2a --bbox 11.50 48.10 11.56 48.14 \\
      --start 2024-06-01 --end 2024-06-30 --bands red nir --max-cloud 30 --store munich.icechunk
  stac2cube build --mission sentinel-2-l2a --aoi field.geojson --start 2024-01-01 \\
      --catalog http://127.0.0.1:8082 --collection sentinel-2-c1-l2a --store field.icechunk
"""


def _configure_environment(debug: bool) -> None:
    """Run Prefect embedded and private unless the user configured otherwise."""
    os.environ.setdefault("PREFECT_HOME", str(Path.home() / ".stac2cube" / "prefect"))
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "DEBUG" if debug else "INFO")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # the embedded Prefect API starts with the first flow; 20 s (the default) is too short on a
    # loaded 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


class _QuietConsole(logging.Filter):
    """The console without ``--debug``: no Dask logs, no tracebacks, and none of Prefect's
    reports of a failed run (the CLI prints the error itself, as the last line on stderr)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "distributed" or record.name.startswith("distributed."):
            return False
        if record.name.startswith("prefect") and (
            record.levelno >= logging.ERROR or record.getMessage().startswith(_FAILED_STATES)
        ):
            return False
        record.exc_info = record.exc_text = None  # the console is the last handler it reaches
        return True


_FAILED_STATES = tuple(f"Finished in state {s}" for s in ("Failed", "Crashed", "Cancelled"))


@contextlib.contextmanager
def _console(debug: bool):
    """Everything on the console with ``debug``; else only what :class:`_QuietConsole` keeps."""
    handlers = [] if debug else logging.getLogger().handlers
    quiet = _QuietConsole()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's last line: ``error: <what is wrong>`` (after the usage)."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"error: {message} (see {self.prog} --help)\n")


def _add_runner_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runner",
        default="auto",
        help="where pixels are computed: auto (SLURM inside a SLURM job, else local), local "
        "(a Dask LocalCluster), slurm (dask-jobqueue), or a Dask scheduler tcp://HOST:PORT",
    )
    p.add_argument(
        "--dask-cluster",
        metavar="BLOCK",
        help="name of a saved stac2cube DaskCluster block with the cluster settings",
    )


@contextlib.contextmanager
def _flow_context(args: argparse.Namespace):
    """Where the CLI runs a flow, once every parameter has been checked: the runner chosen by
    ``--runner`` / ``--dask-cluster``, one Prefect API for the run (a temporary server is
    stopped before the CLI prints an error), the console and the progress display."""
    from stac2cube._progress import TerminalProgress
    from stac2cube.flows.runner import CLUSTER_ENV, RUNNER_ENV, shared_prefect_api

    os.environ[RUNNER_ENV] = args.runner
    if args.dask_cluster:
        os.environ[CLUSTER_ENV] = args.dask_cluster
    with (
        shared_prefect_api(),
        _console(args.debug),
        TerminalProgress("reading and writing pixels"),
    ):
        yield


def _add_mission_and_area(
    p: argparse.ArgumentParser, *, required: bool, mission_note: str = "", aoi_note: str = ""
) -> None:
    """``--mission`` and one of ``--bbox`` / ``--aoi`` (build and availability)."""
    p.add_argument(
        "--mission",
        required=required,
        help="sentinel-2-l2a, sentinel-2-l1c, landsat-c2-l2, sentinel-1-rtc or cop-dem-glo-30"
        + mission_note,
    )
    area = p.add_mutually_exclusive_group(required=required)
    area.add_argument(
        "--bbox",
        nargs=4,
        type=float,
        metavar=("W", "S", "E", "N"),
        help="area as WGS 84 west south east north (degrees)",
    )
    area.add_argument(
        "--aoi",
        help="area as a vector file of polygons (GeoJSON, GeoPackage, Shapefile, KML)" + aoi_note,
    )


def _add_request_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--settings",
        metavar="JSON",
        help="re-run the build recorded in a cube's settings file (<cube>.settings.json); "
        "--store, --start, --end and --batch-size given as well override it",
    )
    _add_mission_and_area(
        p,
        required=False,
        mission_note=" (required unless --settings)",
        aoi_note="; all features form one area unless --per-feature",
    )
    p.add_argument(
        "--start", help="first day, YYYY-MM-DD (UTC, inclusive); default: the first of --dates"
    )
    p.add_argument(
        "--end",
        help="last day, YYYY-MM-DD (UTC, inclusive); default: today (or the last of --dates)",
    )
    p.add_argument(
        "--store",
        help="cube store path (created, or extended if it exists); with --per-feature a "
        "pattern with {name} or a folder (default {name}.icechunk)",
    )
    p.add_argument(
        "--per-feature",
        action="store_true",
        help="build one cube per feature of --aoi, in parallel",
    )
    p.add_argument(
        "--name-field",
        metavar="ATTRIBUTE",
        help="with --per-feature: the attribute naming each cube (default: feature index)",
    )
    p.add_argument(
        "--clip",
        action="store_true",
        help="set pixels outside the --aoi polygon to nodata (the grid stays its bbox)",
    )
    p.add_argument(
        "--season",
        help="keep only these months of every year: FROM-TO (6-8, 12-2), DJF/MAM/JJA/SON, "
        "or a list 4,5,9",
    )
    p.add_argument(
        "--dates",
        nargs="+",
        metavar="YYYY-MM-DD",
        help="keep only scenes acquired on these days (UTC)",
    )
    p.add_argument(
        "--catalog",
        default="earth-search",
        help="earth-search (default), planetary-computer, terrabyte, auto, or a STAC API URL",
    )
    p.add_argument(
        "--collection", help="collection id (default: the catalog's collection for the mission)"
    )
    p.add_argument(
        "--bands",
        nargs="+",
        help="bands by ESA id (B04) or common name (red); default: B02 B03 B04 B08",
    )
    p.add_argument(
        "--resolution", type=float, default=10.0, help="pixel size in metres (default 10)"
    )
    p.add_argument(
        "--crs", help="target CRS, e.g. EPSG:32632 (default: UTM zone of the AOI centre)"
    )
    p.add_argument(
        "--max-cloud",
        type=float,
        default=100.0,
        help="keep scenes with eo:cloud_cover <= this percent (default 100: all)",
    )
    p.add_argument(
        "--min-coverage",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="drop time steps whose valid pixels cover less than this fraction (0-1) of the "
        "area, e.g. slivers at swath edges (default 0: keep all)",
    )
    p.add_argument(
        "--max-scene-cloud",
        type=float,
        default=100.0,
        metavar="PERCENT",
        help="drop time steps with more than this percent of cloud inside the area, from SCL "
        "or QA_PIXEL after loading (default 100: keep all)",
    )
    p.add_argument(
        "--tile-mode",
        choices=["mosaic", "separate"],
        default="mosaic",
        help="mosaic the tiles of a day into one time step (default), or keep each tile as "
        "its own time step with a tile coordinate",
    )
    p.add_argument(
        "--indices",
        nargs="+",
        metavar="INDEX",
        help="spectral indices stored like bands: NDVI NDWI MNDWI NDMI NBR SAVI EVI NDRE NDSI "
        "NDBI; Sentinel-1: VV_VH VH_VV RVI",
    )
    p.add_argument(
        "--composites",
        nargs="+",
        metavar="STAT:PERIOD",
        help="temporal composites kept in the cube's group composites/<period>: STAT median, "
        "mean, min or max; PERIOD all, month, year or season (e.g. median:month)",
    )
    p.add_argument(
        "--statistics",
        action="store_true",
        help="also write <cube>.stats.csv (per-time-step valid/cloud fractions, band means)",
    )
    p.add_argument(
        "--quicklook",
        choices=["none", "gif", "png"],
        default="none",
        help="write a true-colour time-lapse <cube>.quicklook.gif or a PNG grid",
    )
    p.add_argument(
        "--resampling",
        default="nearest",
        choices=["nearest", "bilinear", "cubic", "average"],
        help="resampling of continuous bands from 20/60 m (default nearest; "
        "classification bands always nearest)",
    )
    p.add_argument(
        "--batch-size", type=int, default=8, help="time steps read and written at a time"
    )
    p.add_argument(
        "--mask-clouds",
        action="store_true",
        help="mask clouds/shadows per scene before mosaicking (S2 L2A: SCL, Landsat: QA_PIXEL)",
    )
    p.add_argument(
        "--scl-classes",
        nargs="+",
        type=int,
        metavar="CLASS",
        help="SCL classes --mask-clouds masks (default 1 3 8 9 10)",
    )
    p.add_argument(
        "--qa-flags",
        nargs="+",
        choices=[
            "fill",
            "dilated_cloud",
            "cirrus",
            "cloud",
            "cloud_shadow",
            "snow",
            "clear",
            "water",
        ],
        help="QA_PIXEL flags --mask-clouds masks (default dilated_cloud cirrus cloud cloud_shadow)",
    )
    p.add_argument(
        "--sar-scale",
        choices=["db", "linear"],
        default="db",
        help="Sentinel-1 backscatter in dB (default) or linear gamma0",
    )
    _add_runner_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    from stac2cube import __version__

    parser = _Parser(
        prog="stac2cube",
        description="Turn STAC searches into analysis-ready, incrementally updated data cubes.",
    )
    parser.add_argument("--version", action="version", version=f"stac2cube {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser(
        "build",
        help="build a cube, or extend an existing one",
        epilog=BUILD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_request_arguments(b)

    i = sub.add_parser("info", help="print a cube's grid, bands, time range and scenes per step")
    i.add_argument("path", help="cube store path")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")

    u = sub.add_parser("update", help="extend a cube from its own recorded request up to --end")
    u.add_argument("--store", required=True, help="existing cube store path")
    u.add_argument("--end", help="last day, YYYY-MM-DD (UTC, inclusive); default: today")
    u.add_argument(
        "--lookback-days",
        type=int,
        default=30,
        help="search this many days before the cube's last step for late or reprocessed "
        "scenes (default 30)",
    )
    u.add_argument(
        "--batch-size", type=int, default=8, help="time steps read and written at a time"
    )
    _add_runner_arguments(u)

    h = sub.add_parser("history", help="list a cube's commits (snapshots), newest first")
    h.add_argument("path", help="cube store path")
    h.add_argument("--json", action="store_true", help="print JSON instead of text")

    r = sub.add_parser(
        "rollback",
        help="point a cube back at an earlier snapshot (the abandoned head is kept as a tag)",
    )
    r.add_argument("path", help="cube store path")
    r.add_argument("--to", required=True, metavar="SNAPSHOT", help="snapshot id from `history`")

    e = sub.add_parser("export", help="write a cube as plain Zarr v3, NetCDF, or COGs + VRT")
    e.add_argument("path", help="cube store path")
    e.add_argument("--format", required=True, choices=["zarr", "netcdf", "cog"], help="format")
    e.add_argument("--out", required=True, help="output path (must not exist)")
    e.add_argument("--snapshot", help="export this snapshot instead of the latest")

    d = sub.add_parser(
        "demo",
        help="build a small cube offline from a bundled synthetic catalog "
        "served by a local STAC API (needs PostgreSQL + PostGIS)",
    )
    d.add_argument("--store", default="demo-cube/demo.icechunk", help="cube store path")
    d.add_argument("--data", default="demo-cube/catalog", help="where to write the synthetic COGs")

    a = sub.add_parser(
        "availability",
        help="before a build: list the scenes per day and catalog for an area and period "
        "(tiles, cloud cover, area covered), optionally as CSV and a footprint map",
        description="Search each catalog once (same input rules and filters as build) and "
        "print one row per solar day and catalog. With several catalogs, one that cannot be "
        "searched is shown with its error; a single failing catalog is an error.",
        epilog="examples:\n"
        "  stac2cube availability --mission sentinel-2-l2a --bbox 11.50 48.10 11.56 48.14 \\\n"
        "      --start 2024-06-01 --end 2024-06-30 --catalog earth-search planetary-computer\n"
        "  stac2cube availability --mission landsat-c2-l2 --aoi field.geojson --start 2023-01-01 \\\n"
        "      --season JJA --max-cloud 40 --csv scenes.csv --map footprints.png\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_mission_and_area(a, required=True, aoi_note="; all features form one area")
    a.add_argument(
        "--start", help="first day, YYYY-MM-DD (UTC, inclusive); default: the first of --dates"
    )
    a.add_argument(
        "--end",
        help="last day, YYYY-MM-DD (UTC, inclusive); default: today (or the last of --dates)",
    )
    a.add_argument(
        "--catalog",
        nargs="+",
        action="extend",
        metavar="CATALOG",
        help="catalogs to compare: earth-search (default), planetary-computer, terrabyte, "
        "auto, or STAC API URLs; several names, or the option repeated",
    )
    a.add_argument(
        "--collection",
        nargs="+",
        metavar="COLLECTION",
        help="collection id for every catalog, or one per --catalog in the same order "
        "(default: each catalog's collection for the mission)",
    )
    a.add_argument(
        "--max-cloud",
        type=float,
        default=100.0,
        help="count scenes with eo:cloud_cover <= this percent (default 100: all)",
    )
    a.add_argument(
        "--season",
        help="keep only these months of every year: FROM-TO (6-8, 12-2), DJF/MAM/JJA/SON, "
        "or a list 4,5,9",
    )
    a.add_argument(
        "--dates",
        nargs="+",
        metavar="YYYY-MM-DD",
        help="keep only scenes acquired on these days (UTC)",
    )
    a.add_argument("--csv", metavar="PATH", help="also write the table as CSV to PATH")
    a.add_argument(
        "--map",
        metavar="PNG",
        help="also draw the scene footprints of each catalog over the area to this PNG",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stac2cube`` command."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    _configure_environment(debug)
    from stac2cube.errors import Stac2CubeError

    args = build_parser().parse_args(argv)
    try:
        commands = {
            "build": cmd_build,
            "info": cmd_info,
            "demo": cmd_demo,
            "update": cmd_update,
            "history": cmd_history,
            "rollback": cmd_rollback,
            "export": cmd_export,
            "availability": cmd_availability,
        }
        return commands[args.command](args)
    except Stac2CubeError as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; the cube is left at its last commit", file=sys.stderr)
        return 130
    except Exception as exc:  # not one of ours: still one line, the traceback with --debug
        if args.debug:
            import traceback

            traceback.print_exc()
        reason = (str(exc).strip().splitlines() or [""])[0]
        print(
            f"error: unexpected {type(exc).__name__}: {reason} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


def _request_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "mission": args.mission,
        "bbox": args.bbox,
        "aoi": args.aoi,
        "start": args.start,
        "end": args.end,
        "catalog": args.catalog,
        "collection": args.collection,
        "bands": args.bands,
        "resolution": args.resolution,
        "crs": args.crs,
        "max_cloud": args.max_cloud,
        "resampling": args.resampling,
        "season": args.season,
        "dates": args.dates,
        "clip": args.clip,
        "tile_mode": args.tile_mode,
        "min_coverage": args.min_coverage,
        "max_scene_cloud": args.max_scene_cloud,
        "indices": args.indices,
        "composites": args.composites,
        "statistics": args.statistics,
        "quicklook": args.quicklook,
    }


def _option_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "mask_clouds": args.mask_clouds,
        "scl_classes": args.scl_classes,
        "qa_flags": args.qa_flags,
        "sar_scale": args.sar_scale,
    }


def check_build(params: dict[str, Any], runner: str = "auto") -> dict[str, Any]:
    """Every build parameter and store checked, before a Prefect server or Dask cluster starts.

    Returns ``params`` ready for :func:`~stac2cube.flows.build.get_stac_layers`.
    """
    from stac2cube.parameters import check_build as check_stores
    from stac2cube.parameters import resolve_runner

    resolve_runner(runner)
    params = _json_ready(params)
    check_stores(params)
    return params


def run_build(params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Check the parameters, then run the build flow (see :func:`_flow_context`).

    ``params`` are :func:`~stac2cube.flows.build.get_stac_layers` keyword arguments.
    """
    params = check_build(params, args.runner)
    from stac2cube.flows.build import get_stac_layers

    with _flow_context(args):
        return get_stac_layers(**params)


def build_params(args: argparse.Namespace) -> dict[str, Any]:
    """``get_stac_layers`` parameters from ``stac2cube build`` arguments (or --settings)."""
    from stac2cube.errors import InvalidRequestError

    if args.settings:
        from stac2cube.settings import read_settings

        params = read_settings(args.settings)
        for name in ("store", "start", "end"):
            if getattr(args, name) is not None:
                params[name] = getattr(args, name)
        params["batch_size"] = args.batch_size
        return params
    missing = [
        flag
        for flag, value in (
            ("--mission", args.mission),
            ("--bbox or --aoi", args.bbox or args.aoi),
            ("--start or --dates", args.start or args.dates),
            ("--store", args.store or args.per_feature),
        )
        if not value
    ]
    if missing:
        raise InvalidRequestError(
            f"build needs {', '.join(missing)} (or --settings FILE from an earlier build)"
        )
    params = {**_request_kwargs(args), **_option_kwargs(args)}
    params = {k: v for k, v in params.items() if v is not None}
    params.update(
        store=args.store or "{name}.icechunk",
        batch_size=args.batch_size,
        per_feature=args.per_feature,
        name_field=args.name_field,
    )
    return params


def _json_ready(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    if out.get("bbox") is not None:
        out["bbox"] = [float(v) for v in out["bbox"]]
    return out


def _print_summary(store: str, summary: dict[str, Any]) -> None:
    if summary.get("snapshot"):
        print(
            f"{store}: +{summary['added_time_steps']} time steps, "
            f"{summary.get('replaced_time_steps', 0)} replaced "
            f"({summary.get('scenes', 0)} scenes), {summary['time_steps']} in total, "
            f"snapshot {summary['snapshot']}"
        )
    else:
        print(f"{store}: nothing new, {summary['time_steps']} time steps unchanged")
    if summary.get("filtered_time_steps"):
        print(
            f"  {summary['filtered_time_steps']} time steps dropped by the coverage/cloud filters"
        )
    for kind in ("settings", "statistics", "quicklook"):
        if summary.get(kind):
            print(f"  {kind}: {summary[kind]}")


def cmd_build(args: argparse.Namespace) -> int:
    params = build_params(args)
    summary = run_build(params, args)
    if "cubes" in summary:  # --per-feature
        for cube in summary["cubes"].values():
            _print_summary(cube["store"], cube)
    else:
        _print_summary(params["store"], summary)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from stac2cube.errors import InvalidRequestError
    from stac2cube.parameters import update_parameters

    if args.lookback_days < 0 or args.batch_size < 1:
        raise InvalidRequestError("--lookback-days must be >= 0 and --batch-size >= 1")
    _, params = update_parameters(args.store, args.end, args.lookback_days, args.batch_size)
    if params is not None:
        check_build(params, args.runner)
    from stac2cube.flows.update import update_cube

    with _flow_context(args):
        summary = update_cube(
            store=args.store,
            end=args.end,
            lookback_days=args.lookback_days,
            batch_size=args.batch_size,
        )
    _print_summary(args.store, summary)
    return 0


def _require_cube(path: str):
    """The :class:`~stac2cube.cube.Cube` at ``path``; ``no cube at PATH`` when there is none."""
    from stac2cube.cube import Cube

    cube = Cube(path)
    cube.require()
    return cube


def cmd_history(args: argparse.Namespace) -> int:
    commits = _require_cube(args.path).history()
    if args.json:
        print(json.dumps(commits, indent=1))
        return 0

    def fmt(v: Any) -> str:
        return "-" if v is None else str(v)

    print(f"{'snapshot':<22}{'written (UTC)':<27}{'added':>6}{'replaced':>9}{'scenes':>7}  message")
    for c in commits:
        print(
            f"{c['snapshot']:<22}{c['written_at'][:26]:<27}{fmt(c['added_time_steps']):>6}"
            f"{fmt(c['replaced_time_steps']):>9}{fmt(c['scenes']):>7}  {c['message']}"
        )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    cube = _require_cube(args.path)
    with cube.lock():
        tag = cube.rollback(args.to)
    print(f"{args.path}: now at snapshot {args.to}; the previous head is kept as tag {tag}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stac2cube.export import export_cube

    cube = _require_cube(args.path)
    written = export_cube(cube, args.format, args.out, snapshot=args.snapshot)
    print(f"wrote {len(written)} {'file' if len(written) == 1 else 'files'} to {args.out}")
    return 0


def format_info(info: dict[str, Any]) -> str:
    """Human-readable cube summary."""
    b = info["bounds"]
    lines = [
        f"cube        {info['store']}  (snapshot {info['snapshot']})",
        f"mission     {info['mission']}  collection {info['collection']}",
        f"catalog     {info['catalog']}",
        f"grid        {info['crs']}  {info['resolution']:g} m  "
        f"{info['shape']['x']} x {info['shape']['y']} px  bounds {b[0]:.0f} {b[1]:.0f} {b[2]:.0f} {b[3]:.0f}",
        f"bands       {' '.join(info['bands'])}",
    ]
    if info.get("indices"):
        lines.append(f"indices     {' '.join(info['indices'])}")
    if info.get("composites"):
        lines.append(f"composites  {' '.join(info['composites'])}  (open_composites)")
    if info["time_range"]:
        lines.append(
            f"time        {info['shape']['time']} steps, {info['time_range'][0]} .. {info['time_range'][1]}"
        )
        lines.append("steps       time                  scenes  radiometry")
        for step in info["time_steps"]:
            lines.append(
                f"            {step['time']:<21} {step['scenes']:>6}  {', '.join(step['rules'])}"
            )
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from stac2cube.store import cube_info

    info = cube_info(args.path)
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Write the synthetic catalog, serve it from a local pgstac, build a cube, print its summary."""
    import shutil

    from stac2cube.store import cube_info
    from stac2cube.testing.pgstac import postgres_available, start_local_stac_api
    from stac2cube.testing.synthetic import demo_bbox, standard_scenes, write_catalog

    if not postgres_available():
        from stac2cube.errors import Stac2CubeError

        raise Stac2CubeError("the demo needs PostgreSQL 15 + PostGIS: run scripts/setup.sh first")
    store = Path(args.store)
    if store.exists():
        shutil.rmtree(store)
    print(f"writing the synthetic catalog (COGs + STAC items) to {args.data}", file=sys.stderr)
    cat = write_catalog(args.data, standard_scenes())
    print(
        "starting a local STAC API (PostgreSQL + pgstac + stac-fastapi) on 127.0.0.1",
        file=sys.stderr,
    )
    with start_local_stac_api(collections=cat.collections, items=cat.items) as api:
        print(f"STAC API at {api.url}: {len(cat.items)} items", file=sys.stderr)
        kwargs = {
            "mission": "sentinel-2-l2a",
            "bbox": list(demo_bbox()),
            "aoi": None,
            "start": "2024-01-01",
            "end": "2024-01-31",
            "catalog": api.url,
            "collection": "sentinel-2-c1-l2a",
            "bands": ["B02", "B03", "B04", "B08", "B11", "SCL"],
            "resolution": 10.0,
            "crs": None,
            "max_cloud": 100.0,
            "resampling": "nearest",
            "indices": ["NDVI"],
            "statistics": True,
            "store": str(store),
        }
        run_build(kwargs, argparse.Namespace(runner="auto", dask_cluster=None, debug=args.debug))
    print(format_info(cube_info(store)))
    return 0


def cmd_availability(args: argparse.Namespace) -> int:
    """Print the scenes per day and catalog; write the CSV and the footprint map on request.

    Runs the pure functions of :mod:`stac2cube.availability` directly (a few searches need no
    Prefect run); the flow :func:`stac2cube.flows.availability.check_availability` does the
    same for deployments.
    """
    from stac2cube.availability import (
        check_writable,
        format_table,
        search_catalogs,
        tabulate,
        write_csv,
    )
    from stac2cube.footprints import footprint_map

    csv_path = check_writable(args.csv, "--csv")
    map_path = check_writable(args.map, "--map")
    search = search_catalogs(
        args.catalog or ["earth-search"],
        args.mission,
        bbox=args.bbox,
        aoi=args.aoi,
        start=args.start,
        end=args.end,
        collection=args.collection,
        max_cloud=args.max_cloud,
        season=args.season,
        dates=args.dates,
    )
    table = tabulate(search)
    print(format_table(table, title=search.title))
    if csv_path is not None:
        write_csv(table, csv_path)
        print(f"wrote the table to {csv_path}", file=sys.stderr)
    if map_path is not None:
        footprint_map(search.items_by_catalog, search.area, map_path, title=search.title)
        print(f"wrote the footprint map to {map_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
