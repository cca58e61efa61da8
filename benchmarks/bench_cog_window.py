"""Benchmark: bytes over the wire and wall time of ``get`` over COG assets, small window vs whole asset.

    python benchmarks/bench_cog_window.py            # needs PostgreSQL+PostGIS and ../shared/data

Runs the real STAC API (stac-fastapi-pgstac, ``tests/realstac/pgstac.py``) and the Range-capable
COG server on 127.0.0.1, then ``stacfetch`` ``get`` with ``--provider stac`` for windows of
the rasters item S2A_29RKH_20200219_0_L2A, and prints, per case, the body bytes the COG server
sent (its byte log) against the whole asset's size, and the wall time. Asserts nothing.

Be aware of the fixture: its COGs are Earth Search's, **decimated 10x** (B04: 1098 x 1098 px at
100 m, 512-px blocks, 3 x 3 blocks per band). A literal 2 km x 2 km window is 20 x 20 px here,
and GDAL must still fetch at least one whole 512-px block (51.2 km across, ~1/9 of the file),
so the literal figure is far worse than on a real 10 m asset (10980 px, 22 x 22 blocks of
5.12 km, where 2 km is 200 px: 1-4 blocks of 484). The "proportional" cases re-encode the same
pixels as a COG with 48-px blocks (23 x 23 blocks: the block/tile and window/block ratios of a
native asset) and read the same 20 x 20 px window from it, through the same pipeline.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pystac
import rasterio
from pyproj import Transformer

from stacfetch.api import build_query, get_query
from stacfetch.config import Settings
from stacfetch.plan import plan_jobs
from stacfetch.run import RunContext, execute
from stacfetch.testing.cogserver import CogServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the CI's STAC server
from realstac.pgstac import (  # noqa: E402
    RASTER_SCENE,
    PgStacServer,
    default_shared_dir,
    ensure_venv,
    missing_prerequisites,
    shared_sentinel2_items,
)

DAY = "2020-02-19"
CRS = "EPSG:32629"
TO_LONLAT = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
# (label, centre x, centre y, window side in metres). A lies inside one 512-px block of the
# fixture COGs; B sits on the corner of four of them (the worst case for a small window).
CASES = [
    ("2 km at A", 230_000, 2_770_000, 2_000),
    ("2 km at B", 251_180, 2_748_820, 2_000),
    ("10 km", 255_000, 2_745_000, 10_000),
]


def _query(x: float, y: float, size: float, bands: str) -> object:
    lon, lat = TO_LONLAT.transform(x, y)
    return build_query([lon, lat], DAY, DAY, size=size, bands=bands, resolution=100, crs=CRS)


def _row(label: str, served: int, whole: int, seconds: float, px: str) -> str:
    return (f"{label:<38} {px:>9}  {served / 1e3:9.1f} kB of {whole / 1e3:8.1f} kB = "
            f"{100 * served / whole:5.1f} %   {seconds * 1000:7.0f} ms")


def literal(stac_url: str, cogs: CogServer, out: Path) -> None:
    print("\nliteral: the fixture COGs as published (decimated 10x, 512-px blocks), full `get` "
          "(search + read + write)")
    warm = Settings(provider="stac", base_url=None, token_url=None, stac_url=stac_url,
                    output_dir=out / "warm-up")
    get_query(_query(270_000, 2_720_000, 1_000, "B04"), settings=warm)  # imports, GDAL, pools
    for bands, files in (("B04", ["B04.tif"]), ("B04,B02,SCL", ["B04.tif", "B02.tif", "SCL.tif"])):
        whole = sum((cogs.root / f).stat().st_size for f in files)
        for label, x, y, size in CASES:
            settings = Settings(provider="stac", base_url=None, token_url=None, stac_url=stac_url,
                                output_dir=out / f"{bands}-{x}-{size}")
            query = _query(x, y, size, bands)
            cogs.reset_log()
            t0 = time.perf_counter()
            result = get_query(query, settings=settings)
            seconds = time.perf_counter() - t0
            assert len(result.written) == 1, result.summary()
            with rasterio.open(result.written[0]) as dst:
                px = f"{dst.width}x{dst.height}"
            print(_row(f"{label} [{bands}]", sum(cogs.bytes_served(f) for f in files), whole, seconds, px))


def proportional(shared: Path, out: Path) -> None:
    print("\nproportional: the same B04 pixels re-encoded with 48-px blocks (23 x 23 blocks, like a "
          "native 10980-px asset's 22 x 22), plan + read + write (no search)")
    src_path = shared / "data" / "rasters" / RASTER_SCENE / "B04.tif"
    folder = out / "retiled"
    folder.mkdir()
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        rasterio.shutil.copy(str(src_path), str(folder / "B04.tif"), driver="COG", BLOCKSIZE=48,
                             COMPRESS="DEFLATE", PREDICTOR=2, OVERVIEWS="AUTO")
    whole = (folder / "B04.tif").stat().st_size
    item_json = json.loads((shared / "data" / "rasters" / RASTER_SCENE / "item.json").read_text())
    with CogServer(folder) as cogs:
        item_json["assets"] = {"red": dict(item_json["assets"]["red"], href=cogs.url_for("B04.tif"))}
        item = pystac.Item.from_dict(item_json)
        for label, x, y, size in CASES:
            settings = Settings(provider="stac", base_url=None, token_url=None, stac_url=cogs.url)
            query = _query(x, y, size, "B04")
            jobs = plan_jobs(query, [item], out / f"prop-{x}-{size}", tolerance=timedelta(hours=1))
            cogs.reset_log()
            t0 = time.perf_counter()
            result = execute(jobs, RunContext(settings), workers=1)
            seconds = time.perf_counter() - t0
            assert len(result.written) == 1, result.summary()
            grid = jobs[0].grid
            print(_row(f"{label} [B04, 48-px]", cogs.bytes_served("B04.tif"), whole, seconds,
                       f"{grid.width}x{grid.height}"))


def main() -> int:
    shared = default_shared_dir(Path(__file__).resolve().parents[1])
    missing = missing_prerequisites(shared)
    if missing:
        print("cannot run: " + "; ".join(missing), file=sys.stderr)
        return 1
    venv = ensure_venv()
    with CogServer(shared / "data" / "rasters" / RASTER_SCENE) as cogs, \
            tempfile.TemporaryDirectory(prefix="stacfetch-bench-") as tmp:
        collections, items = shared_sentinel2_items(shared, cogs.url)
        t0 = time.perf_counter()
        with PgStacServer(collections, items, venv=venv) as server:
            print(f"real STAC API up in {time.perf_counter() - t0:.1f} s at {server.url}; "
                  f"COG server {cogs.url}")
            print(f"{'case':<38} {'output':>9}  bytes over the wire vs whole asset(s)       wall time")
            literal(server.url, cogs, Path(tmp))
        proportional(shared, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
