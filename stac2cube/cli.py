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

from stac2cube import prefect_api
from stac2cube.cli_parser import BUILD_OPTIONS, EXIT_ERROR, build_parser

#: exit code of an error stac2cube does not name (a bug, or a library failing unforeseen)
EXIT_UNEXPECTED = 1


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

    def __init__(self, verbose: bool = False):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "distributed" or record.name.startswith("distributed."):
            return False
        if not self.verbose and record.levelno < logging.WARNING:
            return False  # quiet by default: the progress bar and the summary say enough
        if record.name.startswith("prefect") and (
            record.levelno >= logging.ERROR or record.getMessage().startswith(_FAILED_STATES)
        ):
            return False
        record.exc_info = record.exc_text = None  # the console is the last handler it reaches
        return True


_FAILED_STATES = tuple(f"Finished in state {s}" for s in ("Failed", "Crashed", "Cancelled"))


@contextlib.contextmanager
def _console(debug: bool, verbose: bool = False):
    """Everything on the console with ``debug``; else only what :class:`_QuietConsole` keeps
    (warnings and errors; with ``verbose`` the run's INFO lines too)."""
    handlers = [] if debug else logging.getLogger().handlers
    quiet = _QuietConsole(verbose)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


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
        _console(args.debug, getattr(args, "verbose", False)),
        TerminalProgress("reading and writing pixels"),
    ):
        yield


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stac2cube`` command."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    verbose = "--verbose" in argv  # anywhere on the line, before or after the command
    _configure_environment(debug)
    from stac2cube.errors import Stac2CubeError

    args = build_parser().parse_args([a for a in argv if a != "--verbose"])
    args.verbose = verbose or args.verbose
    try:
        commands = {
            "build": cmd_build,
            "info": cmd_info,
            "demo": cmd_demo,
            "update": cmd_update,
            "history": cmd_history,
            "rollback": cmd_rollback,
            "export": cmd_export,
            "coregister": cmd_coregister,
            "availability": cmd_availability,
            "clouds": cmd_clouds,
            "superres": cmd_superres,
            "gc": cmd_gc,
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
        if _disk_full(exc):
            print(
                "error: no space left on the device the cube is written to; the cube is left "
                "at its last commit: free space (then `stac2cube gc PATH` removes what the "
                "run wrote) and run again",
                file=sys.stderr,
            )
            return EXIT_ERROR
        reason = (str(exc).strip().splitlines() or [""])[0]
        print(
            f"error: unexpected {type(exc).__name__}: {reason} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


def _disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` or its cause is ENOSPC (``OSError`` or icechunk's store error)."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def check_build(params: dict[str, Any], runner: str = "auto") -> dict[str, Any]:
    """Every build parameter and store checked, before a Prefect server or Dask cluster starts.

    Returns ``params`` ready for :func:`~stac2cube.flows.build.get_stac_layers`.
    """
    from stac2cube.parameters import check_build as check_stores
    from stac2cube.parameters import resolve_runner

    resolve_runner(runner)
    params = _json_ready(params)
    check_stores(params)
    from stac2cube.superres import build_settings

    build_settings(params)  # --superres: the model folder and device, before anything starts
    return params


def run_build(params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Check the parameters, then run the build flow (see :func:`_flow_context`).

    ``params`` are :func:`~stac2cube.flows.build.get_stac_layers` keyword arguments.
    """
    params = check_build(params, args.runner)
    prefect_api.launch()  # its start-up overlaps the imports below
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
        if args.batch_size is not None:
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
    names = ("mission", "bbox", "aoi", *BUILD_OPTIONS)
    params = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    params["store"] = args.store or "{name}.icechunk"
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
    for b in summary.get("broken_assets") or []:  # --errors-as-nodata
        print(f"  read as nodata: item {b['item']} asset {b['asset']} ({b['reason']})")
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
    superres = {}
    if args.superres or args.superres_model_dir:
        superres = {"superres": True, "superres_model_dir": args.superres_model_dir}
    if args.errors_as_nodata:
        superres["errors_as_nodata"] = True  # passed on like the stage switches
    if params is not None:
        check_build({**params, **superres}, args.runner)
    prefect_api.launch()  # its start-up overlaps the imports below
    from stac2cube.flows.update import update_cube

    with _flow_context(args):
        summary = update_cube(
            store=args.store,
            end=args.end,
            lookback_days=args.lookback_days,
            batch_size=args.batch_size,
            cloud_layers=bool(args.cloud_layers),
            coregister=bool(args.coregister),
            **superres,
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


def cmd_clouds(args: argparse.Namespace) -> int:
    from stac2cube.clouds import CloudSettings, check_sentinel2, merged_settings, stale_times
    from stac2cube.clouds_store import (
        aws_credentials,
        parse_thresholds,
        plan_cloud_layers,
        read_group_record,
        stored_settings,
    )

    thresholds = parse_thresholds(args.thresholds)
    CloudSettings.make(thresholds=thresholds, resolution=args.cloud_resolution)  # checked first
    cube = _require_cube(args.store)
    state = cube.state
    check_sentinel2(state.request, cube.name)
    settings = merged_settings(
        stored_settings(cube),
        thresholds=thresholds,
        resolution=args.cloud_resolution,
        shadows=args.shadows,
        method=args.cloud_method,
        catalog=args.catalog,
        collection=args.collection,
    )
    with aws_credentials(args.aws_credentials_block):  # catalog, pairing, credentials
        stale = stale_times(state.ledger, read_group_record(cube._readonly()))
        plan_cloud_layers(state.request, state.ledger, stale, settings, name=cube.name)
    prefect_api.launch()  # its start-up overlaps the imports below
    from stac2cube.flows.clouds import get_cloud_layers
    from stac2cube.flows.runner import shared_prefect_api

    with shared_prefect_api(), _console(args.debug):
        summary = get_cloud_layers(
            store=args.store,
            catalog=args.catalog,
            collection=args.collection,
            thresholds=thresholds,
            cloud_resolution=args.cloud_resolution,
            shadows=args.shadows,
            cloud_method=args.cloud_method,
            aws_credentials_block=args.aws_credentials_block,
        )
    if summary["snapshot"] is None:
        print(f"{args.store}: cloud layers up to date, nothing to do")
    else:
        print(
            f"{args.store}: cloud layers of {summary['computed_time_steps']} time steps, "
            f"snapshot {summary['snapshot']}"
        )
    for t, ids in summary["unmatched"].items():
        print(f"  {t}: no L1C scene for {', '.join(ids)} (layers NaN)")
    return 0


def cmd_coregister(args: argparse.Namespace) -> int:
    from stac2cube.coregistration import make_settings

    settings = make_settings(
        band=args.band, reference=args.reference, max_shift=args.max_shift, window=args.window
    )
    from stac2cube.flows.coregister import check, coregister_scenes

    check(_require_cube(args.store), settings)  # every problem before Prefect starts
    from stac2cube.flows.runner import shared_prefect_api

    with shared_prefect_api(), _console(args.debug):
        summary = coregister_scenes(
            store=args.store,
            band=args.band,
            reference=args.reference or "median",
            max_shift=settings.max_shift,
            window=settings.window,
        )
    if summary["snapshot"] is None:
        print(f"{args.store}: nothing to co-register (every step is done)")
        return 0
    ref = summary["reference"]
    print(
        f"{args.store}: {summary['coregistered_steps']} steps aligned to the reference "
        f"({ref.get('method')} {str(ref.get('anchor', ''))[:10]}, {ref.get('band')}); "
        f"snapshot {summary['snapshot']}"
    )
    for time, reason in summary["failed_steps"].items():
        print(f"  failed {time}: {reason} (pixels unchanged)")
    if summary.get("raw_snapshot_tag"):
        print(f"  the pixels before are kept as tag {summary['raw_snapshot_tag']}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from stac2cube.gc import collect_garbage, describe

    result = collect_garbage(_require_cube(args.path), keep_days=args.keep_days)
    print(json.dumps(result, indent=1) if args.json else describe(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stac2cube.export import export_cube

    cube = _require_cube(args.path)
    written = export_cube(
        cube, args.format, args.out, snapshot=args.snapshot, cloud_threshold=args.cloud_threshold
    )
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
        run_build(
            kwargs,
            argparse.Namespace(
                runner="auto", dask_cluster=None, debug=args.debug, verbose=args.verbose
            ),
        )
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
        **({} if args.max_cloud is None else {"max_cloud": args.max_cloud}),
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


def cmd_superres(args: argparse.Namespace) -> int:
    """``stac2cube superres``: every check first (cube, bands, model folder, device), then the
    flow (one commit)."""
    from stac2cube.flows.runner import shared_prefect_api
    from stac2cube.flows.superres import check_superres, super_resolution

    options = {
        "model_dir": args.model_dir, "model": args.model, "device": args.device,
        "batch_size": args.batch_size, "precision": args.precision, "overlap": args.overlap,
        "nodata_dilation": args.nodata_dilation, "model_block": args.block,
    }  # fmt: skip
    if args.block is None:  # a block is read through the Prefect API
        check_superres(args.store, **options)
    with shared_prefect_api():
        if args.block is not None:
            check_superres(args.store, **options)
        with _console(args.debug):
            summary = super_resolution(store=args.store, **options)
    print(
        f"{args.store}: super-resolution {summary['computed']} time steps computed, "
        f"{summary['kept']} kept, {summary.get('patches', 0)} patches; snapshot "
        f"{summary['snapshot'] or '(unchanged)'}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
