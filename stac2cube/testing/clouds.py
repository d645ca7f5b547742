"""Synthetic Sentinel-2 L1C + L2A pairs for the cloud-layer tests, the demo and the benchmark.

L1C granules are lossless JPEG 2000 files with Earth Search ``sentinel-2-l1c`` items (the
recorded template, via :mod:`stac2cube.testing.synthetic_missions`); the L2A scenes of the same
acquisitions are COGs with Earth Search ``sentinel-2-c1-l2a`` items
(:mod:`stac2cube.testing.synthetic`). Pairs share platform, tile, sensing time, datatake id
and footprint, as real ones do; the L1C items carry ``view:sun_azimuth``/``view:sun_elevation``.

An L1C scene holds the texture of :func:`~stac2cube.testing.synthetic_missions.texture` (or,
``flat``, the clear-land TOA :data:`CLEAR_TOA` everywhere), a ``dark_box`` of :data:`DARK_TOA`
and a ``cloud_box`` of :data:`CLOUD_TOA` (boxes in 10 m pixels, multiples of 6 so that the 60 m
bands align). DN = TOA * 10000 (+1000 for baseline >= 04.00), 0 in the east nodata strip.

:func:`serve_requester_pays` copies the JP2s into a local S3 API (moto's server mode on
127.0.0.1) in the requester-pays bucket ``sentinel-s2-l1c`` and rewrites the hrefs to
``s3://``, as Earth Search serves them.
"""

from __future__ import annotations

import copy
import datetime as dt
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from stac2cube.testing.synthetic import SceneSpec, make_collection, make_item
from stac2cube.testing.synthetic_missions import (
    MissionScene,
    make_mission_collection,
    make_mission_item,
)

UTC = dt.UTC
S2_BANDS_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                  "B10", "B11", "B12")  # fmt: skip
#: TOA reflectance per band of a thick cloud, clear land and a dark (shadowed) surface;
#: s2cloudless gives them about 1.0, 0.03 and 0.08
CLOUD_TOA = dict(zip(S2_BANDS_ORDER, (0.45, 0.45, 0.45, 0.45, 0.45, 0.46, 0.48, 0.5, 0.5, 0.2,
                                      0.05, 0.35, 0.25), strict=True))  # fmt: skip
CLEAR_TOA = dict(zip(S2_BANDS_ORDER, (0.12, 0.1, 0.09, 0.08, 0.12, 0.2, 0.26, 0.3, 0.32, 0.1,
                                      0.002, 0.2, 0.1), strict=True))  # fmt: skip
DARK_TOA = dict(zip(S2_BANDS_ORDER, (0.08, 0.05, 0.04, 0.03, 0.04, 0.06, 0.07, 0.08, 0.08, 0.03,
                                     0.001, 0.05, 0.03), strict=True))  # fmt: skip
L2A_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12", "SCL")  # csmask reads six
ORIGIN = (690000.0, 5340000.0)
TILE = "32UPU"
EPSG = 32632


@dataclass(frozen=True)
class L1CScene(MissionScene):
    """A synthetic L1C granule (see the module docs); boxes are ``(row0, row1, col0, col1)``
    in 10 m pixels."""

    cloud_box: tuple[int, int, int, int] | None = None
    dark_box: tuple[int, int, int, int] | None = None
    flat: bool = False
    sun: tuple[float, float] = (160.0, 25.0)
    generation: dt.datetime | None = None

    def dn(self, band: str) -> np.ndarray:
        out = super().dn(band)
        if not (self.flat or self.cloud_box or self.dark_box):
            return out
        from stac2cube.testing.synthetic_missions import S2_RES

        f = S2_RES[band] // 10
        rows, cols = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
        strip = out == 0
        refl = np.full(out.shape, CLEAR_TOA[band]) if self.flat else None
        if refl is not None:
            out = np.round(refl * 10000).astype("uint16") + self.dn_offset
        for box, toa in ((self.dark_box, DARK_TOA), (self.cloud_box, CLOUD_TOA)):
            if box is None:
                continue
            r0, r1, c0, c1 = box
            inside = (rows * f >= r0) & (rows * f < r1) & (cols * f >= c0) & (cols * f < c1)
            out[inside] = round(toa[band] * 10000) + self.dn_offset
        out[strip] = 0
        return out.astype("uint16")


def l1c_for(l2a: SceneSpec, **changes: Any) -> L1CScene:
    """The L1C granule of the acquisition of an L2A scene (same platform, tile, time, footprint)."""
    kw: dict[str, Any] = dict(
        mission="sentinel-2-l1c",
        style="earth-search",
        datetime=l2a.datetime,
        epsg=l2a.epsg,
        origin=l2a.origin,
        size=l2a.size,
        seed=l2a.seed + 500,
        tile=l2a.tile,
        platform=l2a.platform,
        baseline=l2a.baseline,
        nodata_cols=l2a.nodata_cols,
    )
    kw.update(changes)
    return L1CScene(**kw)


def make_l1c_item(scene: L1CScene, root: Path, collection: str) -> dict[str, Any]:
    """Write the JP2s of ``scene`` and return its item (Earth Search ``sentinel-2-l1c`` shape)."""
    t = scene.datetime
    sat = scene.plat[-1].upper()
    nxxyy = "N" + scene.baseline.replace(".", "")
    gen = scene.generation or t + dt.timedelta(hours=1)
    props = {
        "s2:datatake_id": f"GS2{sat}_{t:%Y%m%dT%H%M%S}_000000_N{scene.baseline}",
        "s2:datastrip_id": f"S2{sat}_OPER_MSI_L1C_DS_2APS_{gen:%Y%m%dT%H%M%S}_"
        f"S{t:%Y%m%dT%H%M%S}_N{scene.baseline}",
        "s2:generation_time": gen.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "s2:product_uri": f"S2{sat}_MSIL1C_{t:%Y%m%dT%H%M%S}_{nxxyy}_R065_T{scene.tile}_"
        f"{gen:%Y%m%dT%H%M%S}.SAFE",
        "view:sun_azimuth": scene.sun[0],
        "view:sun_elevation": scene.sun[1],
    }
    item_id = scene.item_id or f"S2{sat}_{scene.tile}_{t:%Y%m%d}_0_L1C_{nxxyy}_{gen:%H%M%S}"
    s = replace(scene, collection=collection, item_id=item_id,
                extra_properties={**props, **scene.extra_properties})  # fmt: skip
    return make_mission_item(s, root)


@dataclass
class CloudCatalog:
    """What :func:`write_cloud_catalog` wrote."""

    root: Path
    collections: list[dict[str, Any]]
    items: list[dict[str, Any]]
    l2a: list[SceneSpec]
    l1c: list[L1CScene]
    l2a_collection: str
    l1c_collection: str

    def item(self, item_id: str) -> dict[str, Any]:
        return next(i for i in self.items if i["id"] == item_id)

    @property
    def l1c_items(self) -> list[dict[str, Any]]:
        return [i for i in self.items if i["collection"] == self.l1c_collection]


def write_cloud_catalog(
    root: str | Path,
    l2a: list[SceneSpec],
    l1c: list[L1CScene],
    *,
    l2a_collection: str = "clouds-s2-l2a",
    l1c_collection: str = "clouds-s2-l1c",
) -> CloudCatalog:
    """Write the files and items of L2A scenes and L1C granules under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    l2a = [replace(s, collection=l2a_collection) for s in l2a]
    l2a_items = [make_item(s, root, L2A_BANDS) for s in l2a]
    l1c_items = [make_l1c_item(s, root, l1c_collection) for s in l1c]
    cols = [
        make_collection("earth-search-c1", l2a_collection, l2a_items),
        make_mission_collection("earth-search", l1c_collection, "sentinel-2-l1c", l1c_items),
    ]
    items = l2a_items + l1c_items
    return CloudCatalog(root, cols, items, l2a, l1c, l2a_collection, l1c_collection)


def _at(day: str, hms: str = "10:30:21") -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hms}").replace(tzinfo=UTC)


def standard_cloud_scenes(size: int = 60) -> tuple[list[SceneSpec], list[L1CScene]]:
    """The scenes of the cloud-layer tests (tile 32UPU near Munich, ``size`` 10 m pixels):

    * 2024-01-05: tile A of S2A (its L1C processed twice: 05.09, then 05.10 which must win),
      tile 32UQU of the same orbit 300 m further east, and tile A of S2B two hours later
      (another orbit); all baseline 05.10 (L1C DN offset +1000). An L1C of tile A on
      2024-01-04 is a decoy (another day).
    * 2024-01-10: baseline 03.01 (no offset).
    * 2024-01-15: an L2A scene without L1C (layers NaN, named in the summary).
    * 2024-01-20: flat clear land, a 120 m cloud block in the south, dark land north of it
      (sun azimuth 160, elevation 60: shadows fall north-north-west of the cloud).
    """

    def a(when, **kw):
        return SceneSpec(tile=TILE, epsg=EPSG, origin=ORIGIN, datetime=when, size=size, **kw)

    day1a = a(_at("2024-01-05"), seed=1)
    day1b = SceneSpec(tile="32UQU", epsg=EPSG, origin=(ORIGIN[0] + 300.0, ORIGIN[1]),
                      datetime=_at("2024-01-05", "10:30:25"), size=size, seed=2)  # fmt: skip
    day1c = a(_at("2024-01-05", "12:10:11"), seed=3, platform="sentinel-2b")
    day2 = a(_at("2024-01-10"), seed=4, baseline="03.01")
    day3 = a(_at("2024-01-15"), seed=5)
    day4 = a(_at("2024-01-20"), seed=6)
    l2a = [day1a, day1b, day1c, day2, day3, day4]
    gen = day1a.datetime + dt.timedelta(hours=1)
    c = size // 2 // 6 * 6
    l1c = [
        l1c_for(day1a, baseline="05.09", generation=gen),
        l1c_for(day1a, generation=gen + dt.timedelta(days=30)),
        l1c_for(day1b),
        l1c_for(day1c),
        l1c_for(day2),
        l1c_for(replace(day1a, datetime=_at("2024-01-04"))),
        l1c_for(
            day4,
            flat=True,
            cloud_box=(size - 24, size - 12, c, c + 12),
            dark_box=(0, size - 24, 0, size),
            sun=(160.0, 60.0),
        ),
    ]
    return l2a, l1c


# --- requester-pays S3 on loopback -----------------------------------------------------------

REQUESTER_PAYS_BUCKET = "sentinel-s2-l1c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalS3:
    """A moto S3 server on 127.0.0.1 and the GDAL/AWS settings that reach it."""

    server: Any
    port: int

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def gdal_env(self) -> dict[str, str]:
        """Environment for GDAL (and boto3) to read from this server with test credentials."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_S3_ENDPOINT": self.endpoint,
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_HTTPS": "NO",
        }

    def stop(self) -> None:
        self.server.stop()


def start_local_s3() -> LocalS3:
    """Start moto's threaded S3 server on a free loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return LocalS3(server, port)


def serve_requester_pays(
    s3: LocalS3, items: list[dict[str, Any]], collection: str
) -> list[dict[str, Any]]:
    """Upload the files of ``items`` to the requester-pays bucket of ``s3``; return copies of
    the items in ``collection`` with ``s3://`` hrefs (``storage:requester_pays`` true)."""
    from urllib.parse import urlparse

    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=f"http://{s3.endpoint}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    try:
        client.create_bucket(Bucket=REQUESTER_PAYS_BUCKET)
        client.put_bucket_request_payment(
            Bucket=REQUESTER_PAYS_BUCKET, RequestPaymentConfiguration={"Payer": "Requester"}
        )
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    out = []
    for item in items:
        new = copy.deepcopy(item)
        new["collection"] = collection
        new["id"] = item["id"] + "_RP"
        for _key, asset in new["assets"].items():
            path = Path(urlparse(asset["href"]).path)
            s3_key = f"tiles/{item['id']}/{path.name}"
            client.upload_file(str(path), REQUESTER_PAYS_BUCKET, s3_key)
            asset["href"] = f"s3://{REQUESTER_PAYS_BUCKET}/{s3_key}"
            asset["storage:requester_pays"] = True
        out.append(new)
    return out
