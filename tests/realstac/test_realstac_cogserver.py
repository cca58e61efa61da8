"""The Range-capable COG server: HTTP byte-range semantics, the byte log, fault switches."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import requests
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from stacfetch.testing.cogserver import CogServer

GDAL_HTTP_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
    "GDAL_HTTP_MAX_RETRY": "0",
}


def test_byte_ranges(fresh_cog_server: CogServer) -> None:
    cogs = fresh_cog_server
    data = (cogs.root / "B01.tif").read_bytes()
    size = len(data)
    url = cogs.url_for("B01.tif")
    with requests.Session() as http:
        full = http.get(url, timeout=10)
        assert full.status_code == 200 and full.content == data
        assert full.headers["Accept-Ranges"] == "bytes"
        assert full.headers["Content-Type"] == "image/tiff"

        part = http.get(url, headers={"Range": "bytes=100-1123"}, timeout=10)
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes 100-1123/{size}"
        assert part.content == data[100:1124]

        tail = http.get(url, headers={"Range": "bytes=-500"}, timeout=10)
        assert tail.status_code == 206 and tail.content == data[-500:]
        opened = http.get(url, headers={"Range": f"bytes={size - 10}-"}, timeout=10)
        assert opened.status_code == 206 and opened.content == data[-10:]
        clipped = http.get(url, headers={"Range": f"bytes={size - 10}-{size + 100}"}, timeout=10)
        assert clipped.status_code == 206 and clipped.content == data[-10:]

        bad = http.get(url, headers={"Range": f"bytes={size}-"}, timeout=10)
        assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{size}"

        head = http.head(url, timeout=10)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == size

        for path in ("nope.tif", "../items/SOURCES.md", "%2e%2e/SOURCES.md", ""):
            assert http.get(f"{cogs.url}/{path}", timeout=10).status_code == 404

    assert cogs.bytes_served("B01.tif") == size + 1024 + 500 + 10 + 10
    statuses = [r.status for r in cogs.requests_for("B01.tif")]
    assert statuses == [200, 206, 206, 206, 206, 416, 200]


def test_fault_404_for_a_named_file(fresh_cog_server: CogServer) -> None:
    cogs = fresh_cog_server
    cogs.fail("B01.tif")
    assert requests.get(cogs.url_for("B01.tif"), timeout=10).status_code == 404
    assert requests.get(cogs.url_for("SCL.tif"), timeout=10).status_code == 200
    with rasterio.Env(**GDAL_HTTP_OPTIONS), pytest.raises(RasterioIOError):
        rasterio.open(f"/vsicurl/{cogs.url_for('B01.tif')}")
    cogs.fail("SCL.tif", 503)
    assert requests.get(cogs.url_for("SCL.tif"), timeout=10).status_code == 503
    cogs.clear_faults()
    assert requests.get(cogs.url_for("B01.tif"), timeout=10).status_code == 200


def test_fault_truncated_body(fresh_cog_server: CogServer) -> None:
    cogs = fresh_cog_server
    cogs.truncate("B01.tif", after=1000)
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(cogs.url_for("B01.tif"), timeout=10).raise_for_status()
    assert cogs.bytes_served("B01.tif") == 1000
    cogs.clear_faults()
    ok = requests.get(cogs.url_for("B01.tif"), timeout=10)
    assert ok.status_code == 200 and len(ok.content) == (cogs.root / "B01.tif").stat().st_size


def test_gdal_windowed_read_fetches_a_fraction_of_the_file(fresh_cog_server: CogServer) -> None:
    cogs = fresh_cog_server
    local = cogs.root / "B04.tif"
    window = Window(col_off=100, row_off=700, width=200, height=200)
    with rasterio.Env(**GDAL_HTTP_OPTIONS), rasterio.open(f"/vsicurl/{cogs.url_for('B04.tif')}") as src:
        remote = src.read(1, window=window)
        overview = src.read(1, out_shape=(275, 275))  # served from the file's overview level
    with rasterio.open(local) as src:
        assert np.array_equal(remote, src.read(1, window=window))
        assert np.array_equal(overview, src.read(1, out_shape=(275, 275)))
    served = cogs.bytes_served("B04.tif")
    assert 0 < served < local.stat().st_size / 2, served
