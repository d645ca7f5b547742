"""Run reports: what a build or update did, as Prefect artifacts on the flow run.

Pure functions turn a flow's summary (the dict :func:`~stac2cube.flows.build.get_stac_layers`
returns) and the cube's own description (:func:`stac2cube.store.cube_info`) into markdown and
table rows; :func:`publish_build_report` is the thin Prefect wrapper that stores them as a
markdown artifact and a table artifact, keyed by the cube's name so the UI shows each cube's
latest report and its history.

Example:
    >>> md = report_markdown({"store": "a.icechunk", "snapshot": None, "added_time_steps": 0,
    ...                       "replaced_time_steps": 0, "time_steps": 3, "scenes": 0})
    >>> "Nothing new" in md
    True
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stac2cube.signing import redact_url

__all__ = [
    "ProgressArtifact",
    "artifact_key",
    "percent_done",
    "publish_build_report",
    "quicklook_markdown",
    "quicklook_png",
    "redact_url",
    "report_markdown",
    "time_step_rows",
    "with_step_fractions",
]

if TYPE_CHECKING:
    from uuid import UUID

    import xarray as xr

    from stac2cube.cube import Cube

#: Rows of the time-step table at most (the newest are kept).
MAX_TABLE_ROWS = 1000


def artifact_key(store: str, suffix: str) -> str:
    """An artifact key for the cube at ``store``: lowercase letters, digits and dashes.

    >>> artifact_key("/data/Munich 2024.icechunk", "report")
    'cube-munich-2024-report'
    """
    name = Path(str(store).rstrip("/")).name.removesuffix(".icechunk") or "cube"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cube"
    return f"cube-{slug}-{suffix}"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value).replace("|", "\\|")


def time_step_rows(info: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One row per time step of the cube (newest last): time, scenes, rules, cloud fraction.

    ``cloud_fraction`` is filled where the cube records it for the step, else None.
    Only the newest :data:`MAX_TABLE_ROWS` steps are kept.
    """
    if not info:
        return []
    rows = [
        {
            "time": step.get("time"),
            "scenes": step.get("scenes"),
            "radiometry": ", ".join(step.get("rules", [])),
            "cloud_fraction": step.get("cloud_fraction"),
            "valid_fraction": step.get("valid_fraction"),
        }
        for step in info.get("time_steps", [])
    ]
    return rows[-MAX_TABLE_ROWS:]


def with_step_fractions(info: Mapping[str, Any] | None, ds: xr.Dataset | None) -> Any:
    """``info`` with each time step's ``cloud_fraction`` and ``valid_fraction`` from the cube's
    per-step coordinates (:mod:`stac2cube.scene_metadata`), where they are numbers.

    :func:`stac2cube.store.cube_info` describes the ledger (scenes, rules); the fractions are
    coordinates of the dataset, computed from the SCL / QA_PIXEL band when it was loaded.
    """
    if not info or ds is None or "time" not in ds.coords:
        return info
    import numpy as np
    import pandas as pd

    times = [pd.Timestamp(t) for t in ds["time"].values]
    columns = {}
    for name in ("valid_fraction", "cloud_fraction"):
        if name in ds.coords and ds[name].dims == ("time",):
            values = np.asarray(ds[name].values, dtype="float64")
            columns[name] = {
                t: (float(v) if np.isfinite(v) else None)
                for t, v in zip(times, values, strict=True)
            }
    if not columns:
        return info
    steps = []
    for step in info.get("time_steps", []):
        when = pd.Timestamp(step.get("time")).tz_localize(None) if step.get("time") else None
        filled = dict(step)
        for name, by_time in columns.items():
            if filled.get(name) is None and when in by_time:
                filled[name] = by_time[when]
        steps.append(filled)
    return {**info, "time_steps": steps}


def report_markdown(
    summary: Mapping[str, Any], info: Mapping[str, Any] | None = None, *, title: str = "Cube build"
) -> str:
    """A markdown report of one run.

    Args:
        summary: What the flow returned: ``store``, ``snapshot`` (None when nothing was
            written), ``added_time_steps``, ``replaced_time_steps``, ``time_steps``, ``scenes``.
        info: :func:`stac2cube.store.cube_info` of the cube after the run, if there is a cube.
        title: First heading.

    Returns:
        Markdown text: what changed, the grid, bands, time range and source (catalog URL
        without credentials), and the newest time steps with their scene counts.
    """
    store = summary.get("store", "?")
    lines = [f"# {title}: `{store}`", ""]
    if summary.get("snapshot") is None:
        lines += ["**Nothing new**: the cube already holds every matching scene.", ""]
    else:
        added, replaced = summary.get("added_time_steps", 0), summary.get("replaced_time_steps", 0)
        lines += [
            f"**Added {added} time step{'s' * (added != 1)}**"
            + (f", replaced {replaced}" if replaced else "")
            + f". Committed snapshot `{summary['snapshot']}`.",
            "",
        ]
    lines += [
        "| | |",
        "|---|---|",
        f"| time steps added | {_fmt(summary.get('added_time_steps', 0))} |",
        f"| time steps replaced (reprocessed scenes) | "
        f"{_fmt(summary.get('replaced_time_steps', 0))} |",
        f"| scenes read | {_fmt(summary.get('scenes', 0))} |",
        f"| time steps in the cube | {_fmt(summary.get('time_steps'))} |",
    ]
    for b in summary.get("broken_assets") or []:  # errors_as_nodata (stac2cube.broken)
        lines.append(f"| read as nodata | item {b['item']} asset {b['asset']}: {b['reason']} |")
    if info:
        shape = info.get("shape", {})
        time_range = info.get("time_range") or [None, None]
        lines += [
            f"| mission | {_fmt(info.get('mission'))} |",
            f"| catalog | {_fmt(redact_url(info.get('catalog')))} |",
            f"| collection | {_fmt(info.get('collection'))} |",
            f"| bands | {_fmt(info.get('bands'))} |",
            f"| grid | {_fmt(info.get('crs'))}, {_fmt(info.get('resolution'))} m, "
            f"{_fmt(shape.get('x'))} x {_fmt(shape.get('y'))} px |",
            f"| bounds | {_fmt(info.get('bounds'))} |",
            f"| time range | {_fmt(time_range[0])} .. {_fmt(time_range[1])} |",
            f"| stac2cube | {_fmt(info.get('stac2cube_version'))} |",
        ]
        rows = time_step_rows(info)[-10:]
        if rows:
            with_cloud = any(r["cloud_fraction"] is not None for r in rows)
            head = "| time | scenes | radiometry |" + (" cloud fraction |" if with_cloud else "")
            sep = "|---|---|---|" + ("---|" if with_cloud else "")
            lines += ["", f"## Newest {len(rows)} time steps", "", head, sep]
            for r in rows:
                cells = [_fmt(r["time"]), _fmt(r["scenes"]), _fmt(r["radiometry"])]
                if with_cloud:
                    cf = r["cloud_fraction"]
                    cells.append("-" if cf is None else f"{100 * cf:.0f}%")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def quicklook_png(ds: xr.Dataset, *, max_size: int = 256) -> bytes | None:
    """A PNG of the cube's newest time step (colours and stretch: :mod:`stac2cube.quicklook`).

    Args:
        ds: The decoded cube (:func:`stac2cube.store.open_cube`).
        max_size: Largest side of the picture in pixels.

    Returns:
        PNG bytes, or None for a cube without time steps or bands to show.
    """
    from stac2cube.errors import InvalidRequestError
    from stac2cube.quicklook import channel_limits, png_bytes, rgb_bands, rgba_frame, subsample

    if ds.sizes.get("time", 0) == 0:
        return None
    try:
        names = rgb_bands(ds)
    except InvalidRequestError:
        return None
    newest = subsample(ds, max_size).isel(time=[-1]).load()
    return png_bytes(rgba_frame(newest, 0, names, channel_limits(newest, names)))


def quicklook_markdown(png: bytes, caption: str) -> str:
    """Markdown showing ``png`` inline, with a caption.

    An image artifact (``create_image_artifact``) shows its URL under the picture, and a
    ``data:`` URL is the whole picture as text; markdown shows only the picture.

    >>> quicklook_markdown(b"x", "Newest time step").splitlines()[0]
    '![Newest time step](data:image/png;base64,eA==)'
    """
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return f"![{caption}]({url})\n\n*{caption}*\n"


def percent_done(done: int, total: int) -> float:
    """Progress in percent, 0..100 (100 for an empty job).

    >>> percent_done(3, 8)
    37.5
    """
    if total <= 0:
        return 100.0
    return round(100.0 * min(max(done, 0), total) / total, 1)


class ProgressArtifact:
    """A Prefect progress artifact of a long run, advanced as time steps are written.

    Example:
        >>> progress = ProgressArtifact("munich.icechunk", total=40)  # doctest: +SKIP
        >>> progress.update(8)  # doctest: +SKIP
    """

    def __init__(self, store: str, total: int, description: str | None = None) -> None:
        """Create the artifact at 0% on the current run.

        Args:
            store: The cube store (names the artifact key).
            total: Units of work (time steps) of the run.
            description: Shown under the progress bar.
        """
        from prefect.artifacts import create_progress_artifact

        self.total = total
        self.key = artifact_key(store, "progress")
        self.id: UUID = create_progress_artifact(
            0.0, key=self.key, description=description or f"Time steps written to {store}"
        )

    def update(self, done: int) -> float:
        """Set the progress to ``done`` of ``total``; returns the percentage."""
        from prefect.artifacts import update_progress_artifact

        pct = percent_done(done, self.total)
        update_progress_artifact(self.id, pct)
        return pct


def publish_build_report(
    summary: Mapping[str, Any],
    *,
    info: Mapping[str, Any] | None = None,
    title: str = "Cube build",
    cube: Cube | None = None,
) -> dict[str, Any]:
    """Store the run's report as Prefect artifacts: markdown summary, time-step table, quicklook.

    Call it inside a flow or task run: the artifacts attach to that run. ``info`` defaults to
    :func:`~stac2cube.store.cube_info` of ``summary["store"]`` (None when there is no cube), or
    the description of the state ``cube`` holds (the run's handle: the store is not read again).

    Args:
        summary: The flow's summary dict.
        info: The cube's description, if already at hand.
        title: First heading of the markdown.
        cube: The run's :class:`~stac2cube.cube.Cube` of ``summary["store"]``, if at hand.

    Returns:
        ``{"markdown": id, "table": id, "quicklook": id, "keys": [...]}``: the artifact ids (None
        where there was nothing to show) and keys.
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    store = str(summary.get("store", "cube"))
    if cube is None:
        from stac2cube.cube import Cube

        cube = Cube(store)
    if info is None:
        info = cube.info() if cube.state is not None else None
    ds = cube.open_dataset(snapshot=info.get("snapshot")) if info else None
    info = with_step_fractions(info, ds)
    report_key = artifact_key(store, "report")
    table_key = artifact_key(store, "time-steps")
    md_id = create_markdown_artifact(
        markdown=report_markdown(summary, info, title=title),
        key=report_key,
        description=f"{title} of {store}",
    )
    rows = time_step_rows(info)
    table_id = None
    if rows:
        table_id = create_table_artifact(
            table=rows, key=table_key, description=f"Time steps of {store}"
        )
    image_key = artifact_key(store, "quicklook")
    image_id = None
    png = quicklook_png(ds) if ds is not None else None
    if png is not None:
        newest = (info.get("time_range") or [None, None])[1]
        image_id = create_markdown_artifact(
            markdown=quicklook_markdown(png, f"Newest time step of {store}: {newest}"),
            key=image_key,
            description=f"Newest time step of {store}",
        )
    return {
        "markdown": md_id,
        "table": table_id,
        "quicklook": image_id,
        "keys": [report_key, table_key, image_key],
    }
