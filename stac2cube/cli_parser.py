"""The ``stac2cube`` command line's options: one parser, each option declared once.

The build's options come from the cube spec (:func:`stac2cube.spec.add_cli_options`, where
each parameter is defined once, with its type, default and description); ``availability``
shares the search options. Parsing errors end with the CLI's last line, ``error: ...``.
"""

from __future__ import annotations

import argparse
import sys

#: exit code of an error stac2cube names (bad input, a catalog, a store, ...)
EXIT_ERROR = 2

BUILD_EPILOG = """\
examples:
  stac2cube build --mission sentinel-2-l2a --bbox 11.50 48.10 11.56 48.14 \\
      --start 2024-06-01 --end 2024-06-30 --bands red nir --max-cloud 30 --store munich.icechunk
  stac2cube build --mission sentinel-2-l2a --aoi field.geojson --start 2024-01-01 \\
      --catalog http://127.0.0.1:8082 --collection sentinel-2-c1-l2a --store field.icechunk
"""


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's last line: ``error: <what is wrong>`` (after the usage)."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"error: {message} (see {self.prog} --help)\n")


def _add_runner_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runner",
        default="auto",
        help="where pixels are computed: auto (SLURM inside a SLURM job, else threads, or "
        "the local cluster of --dask-cluster), "
        "threads (no cluster: dask's threaded scheduler in this process, the fastest on one "
        "machine), local (a Dask LocalCluster, with its dashboard), slurm (dask-jobqueue), or "
        "a Dask scheduler tcp://HOST:PORT",
    )
    p.add_argument(
        "--dask-cluster",
        metavar="BLOCK",
        help="name of a saved stac2cube DaskCluster block with the cluster settings",
    )


#: ``stac2cube build`` options from the cube spec and the run's parameters (stac2cube.spec,
#: where each is defined once), in help order; --mission, --bbox and --aoi come first
BUILD_OPTIONS = (
    "start", "end", "store", "per_feature", "name_field", "clip", "season", "dates", "catalog",
    "collection", "bands", "resolution", "crs", "anchor", "max_cloud", "min_coverage",
    "max_scene_cloud", "tile_mode", "indices", "composites", "statistics", "quicklook",
    "resampling", "batch_size", "mask_clouds", "scl_classes", "qa_flags", "sar_scale",
    "cloud_layers",
    "coregister",
    "superres", "superres_model_dir", "superres_model",
    "errors_as_nodata",
)  # fmt: skip
#: the build's options that are also ``stac2cube availability``'s
AVAILABILITY_OPTIONS = ("start", "end", "max_cloud", "season", "dates")


def _add_mission_and_area(
    p: argparse.ArgumentParser, *, required: bool, mission_note: str = "", aoi_note: str = ""
) -> None:
    """``--mission`` and one of ``--bbox`` / ``--aoi`` (build and availability)."""
    from stac2cube.spec import add_cli_options

    add_cli_options(p, ["mission"], required=required, note=mission_note)
    area = p.add_mutually_exclusive_group(required=required)
    add_cli_options(area, ["bbox"])
    area.add_argument(  # a file on the command line; the flow also takes GeoJSON itself
        "--aoi",
        help="area as a vector file of polygons (GeoJSON, GeoPackage, Shapefile, KML)" + aoi_note,
    )


def _add_request_arguments(p: argparse.ArgumentParser) -> None:
    from stac2cube.spec import add_cli_options

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
    add_cli_options(p, BUILD_OPTIONS)
    _add_runner_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    from stac2cube import __version__
    from stac2cube.spec import DEFAULT_BATCH_SIZE, add_cli_options

    parser = _Parser(
        prog="stac2cube",
        description="Turn STAC searches into analysis-ready, incrementally updated data cubes.",
    )
    parser.add_argument("--version", action="version", version=f"stac2cube {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--verbose", action="store_true", help="show the run's log lines (INFO) on the console"
    )
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
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"time steps read and written at a time (default {DEFAULT_BATCH_SIZE}, fewer on "
        "large grids)",
    )
    add_cli_options(u, ["cloud_layers", "coregister", "superres", "superres_model_dir"])
    add_cli_options(u, ["errors_as_nodata"])
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

    c = sub.add_parser(
        "coregister",
        help="align every time step of a Sentinel-2 cube to one stored reference (AROSICS)",
    )
    c.add_argument("--store", required=True, help="existing cube store path")
    c.add_argument("--band", help="matching band, native 10 m: B08 (default), B04, B03 or B02")
    c.add_argument(
        "--reference",
        metavar="DATE|median",
        help="median (default: clear-sky median of the clearest steps) or the date of a step; "
        "fixed by the first run",
    )
    c.add_argument(
        "--max-shift", type=float, metavar="PX", help="largest shift accepted (default 5 px)"
    )
    c.add_argument(
        "--window", type=int, metavar="PX", help="matching window edge, a power of two (128)"
    )
    g = sub.add_parser(
        "gc",
        help="expire old snapshots and delete data no snapshot needs (killed runs' leftovers "
        "included); the head and tags are kept",
    )
    g.add_argument("path", help="cube store path")
    g.add_argument(
        "--keep-days",
        type=float,
        default=30.0,
        help="keep the snapshots of the last N days in the history (default 30; 0: only the "
        "head and the tags)",
    )
    g.add_argument("--json", action="store_true", help="print JSON instead of text")

    e = sub.add_parser("export", help="write a cube as plain Zarr v3, NetCDF, or COGs + VRT")
    e.add_argument("path", help="cube store path")
    e.add_argument("--format", required=True, choices=["zarr", "netcdf", "cog"], help="format")
    e.add_argument("--out", required=True, help="output path (must not exist)")
    e.add_argument("--snapshot", help="export this snapshot instead of the latest")
    e.add_argument(
        "--cloud-threshold",
        type=float,
        metavar="P",
        help="export the bands with clouds (cloud_mask at P percent) and shadows of the "
        "group clouds as NaN (see `stac2cube clouds`)",
    )

    cl = sub.add_parser(
        "clouds",
        help="cloud probability, masks and shadows of a Sentinel-2 cube (s2cloudless on the "
        "matching L1C scenes), in the cube's group clouds",
    )
    cl.add_argument("--store", required=True, help="existing Sentinel-2 L2A cube store path")
    cl.add_argument("--catalog", help="catalog of the L1C scenes (default: the cube's)")
    cl.add_argument(
        "--collection", metavar="L1C_ID", help="L1C collection id (default: the catalog's)"
    )
    cl.add_argument(
        "--thresholds",
        nargs="+",
        metavar="P",
        help="cloud-probability thresholds in percent 0-100, one mask each (default 40)",
    )
    cl.add_argument(
        "--cloud-resolution",
        type=float,
        metavar="M",
        help="processing resolution in metres (default 60; the cube's resolution runs "
        "s2cloudless on exactly its pixels)",
    )
    cl.add_argument("--shadows", action="store_true", default=None, help="also write shadow_mask")
    cl.add_argument(
        "--cloud-method",
        choices=["s2cloudless", "csmask"],
        help="s2cloudless (default, needs L1C) or csmask (on the L2A bands, ukis-csmask)",
    )
    cl.add_argument(
        "--aws-credentials-block",
        metavar="BLOCK",
        help="Prefect Secret block with AWS keys for requester-pays L1C (default: environment)",
    )

    d = sub.add_parser(
        "demo",
        help="build a small cube offline from a bundled synthetic catalog "
        "served by a local STAC API (needs PostgreSQL + PostGIS)",
    )
    d.add_argument("--store", default="demo-cube/demo.icechunk", help="cube store path")
    d.add_argument("--data", default="demo-cube/catalog", help="where to write the synthetic COGs")

    _add_superres_parser(sub)

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
    add_cli_options(a, AVAILABILITY_OPTIONS)
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
    a.add_argument("--csv", metavar="PATH", help="also write the table as CSV to PATH")
    a.add_argument(
        "--map",
        metavar="PNG",
        help="also draw the scene footprints of each catalog over the area to this PNG",
    )
    return parser


def _add_superres_parser(sub) -> None:
    """``stac2cube superres``: SEN2SR 2.5 m bands for an existing Sentinel-2 cube."""
    s = sub.add_parser(
        "superres",
        help="super-resolve a Sentinel-2 cube's 10 m / 20 m bands to 2.5 m with SEN2SR "
        "(weights from a local folder) into its group superres",
    )
    s.add_argument("--store", required=True, help="existing Sentinel-2 cube store path")
    s.add_argument(
        "--model-dir",
        metavar="DIR",
        help="folder of the SEN2SR weights (mlstac layout; see the README, Super-resolution); "
        "default: the --block's, or the one the cube's superres group was made with",
    )
    s.add_argument(
        "--model",
        choices=["rgbn", "full", "rswir-x2"],
        help="rgbn: B04 B03 B02 B08 to 2.5 m (default); full: 10 bands to 2.5 m; rswir-x2: "
        "B05 B06 B07 B8A B11 B12 to 10 m",
    )
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    s.add_argument("--batch-size", type=int, metavar="N", help="128 px patches per forward pass")
    s.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], help="default auto")
    s.add_argument("--overlap", type=int, metavar="PIXELS", help="patch overlap (default 32)")
    s.add_argument(
        "--nodata-dilation",
        type=int,
        metavar="PIXELS",
        help="10 m pixels the nodata mask grows by in the output (default 2)",
    )
    s.add_argument("--block", metavar="NAME", help="a superres-model Prefect block")
