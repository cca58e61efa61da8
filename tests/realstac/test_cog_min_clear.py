"""``--min-clear`` with a COG provider: the SCL asset's windows, read like the bands, decide.

The fixture scene's north-east corner is partly cloudy (SCL 8/9/10); the clear share expected
over the output grid is computed here from the local SCL.tif (nearest, as the bands are read).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.features import geometry_mask
from shapely import transform as shapely_transform

from stacfetch.api import build_query, get_query
from stacfetch.config import Settings
from stacfetch.plan import grid_for

from .conftest import RealStac
from .test_cog_get import CRS, DAY, _centre, _nearest_reference

pytestmark = pytest.mark.realserver

CLOUDY = (295_000, 2_790_000)  # about a third clear over 10 km


class _Grid:
    """What _nearest_reference needs of an output file: its grid."""

    def __init__(self, grid) -> None:
        self.transform, self.width, self.height = grid.transform, grid.width, grid.height


def expected_clear(real_stac: RealStac, query, job) -> float:
    """Clear SCL pixels among the data pixels of the job's area (its polygon, if it has one)."""
    grid = grid_for(query.geometry, CRS, 100)
    scl = _nearest_reference(real_stac.cogs.root / "SCL.tif", _Grid(grid))
    inside = np.ones(scl.shape, dtype=bool)
    if job.geometry is not None:
        to_utm = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
        area = shapely_transform(job.geometry, to_utm.transform, interleaved=False)
        inside = geometry_mask([area], out_shape=scl.shape, transform=grid.transform, invert=True)
    data = (scl != 0) & inside
    return float((np.isin(scl, (4, 5, 6, 11)) & data).sum() * 100 / data.sum())


def run(real_stac: RealStac, out: Path, min_clear: float, location=None):
    query = build_query(location or _centre(*CLOUDY), DAY, DAY, size=10_000, bands="B04,SCL",
                        resolution=100, crs=CRS)
    settings = Settings(provider="stac", base_url=None, token_url=None, stac_url=real_stac.url,
                        output_dir=out)
    before = real_stac.cogs.bytes_served("B04.tif"), real_stac.cogs.bytes_served("SCL.tif")
    result = get_query(query, settings=settings, min_clear=min_clear)
    served = (real_stac.cogs.bytes_served("B04.tif") - before[0],
              real_stac.cogs.bytes_served("SCL.tif") - before[1])
    return query, result, served


def test_a_cloudy_acquisition_is_skipped_without_reading_its_bands(real_stac: RealStac, tmp_path: Path) -> None:
    query, result, (b04, scl) = run(real_stac, tmp_path, min_clear=50)
    (share,) = result.screened
    truth = expected_clear(real_stac, query, share.job)
    assert 20 < truth < 45
    assert share.error is None and share.clear == pytest.approx(truth, abs=0.01)
    assert result.cloudy == [share] and result.written == [] and not result.failed
    assert scl > 0 and b04 == 0  # the SCL windows were read, the bands never
    assert not list(tmp_path.rglob("*.tif"))


def test_a_clear_enough_acquisition_is_downloaded(real_stac: RealStac, tmp_path: Path) -> None:
    query, result, _ = run(real_stac, tmp_path, min_clear=20)
    (share,) = result.screened
    assert share.clear == pytest.approx(expected_clear(real_stac, query, share.job), abs=0.01)
    assert len(result.written) == 1 and not result.cloudy
    # the bands were read and written (not the bytes served: GDAL's process-wide /vsicurl/
    # cache may hold them from an earlier test of the same server, whatever the test order)
    with rasterio.open(result.written[0]) as dst:
        got = dst.read(1)
        assert np.array_equal(got, _nearest_reference(real_stac.cogs.root / "B04.tif", dst))
    assert (got > 0).mean() > 0.5
    assert "skipped as cloudy" not in result.summary()


def test_a_polygon_area_counts_only_its_own_pixels(real_stac: RealStac, tmp_path: Path) -> None:
    x, y = CLOUDY
    triangle = [_centre(x - 5000, y - 5000), _centre(x + 5000, y - 5000), _centre(x + 5000, y + 5000),
                _centre(x - 5000, y - 5000)]  # the cloudier north-east half of the square
    query, result, _ = run(real_stac, tmp_path, min_clear=1, location=triangle)
    (share,) = result.screened
    assert share.job.geometry is not None and share.data_pixels < 101 * 101 * 0.6
    assert share.clear == pytest.approx(expected_clear(real_stac, query, share.job), abs=0.01)
