"""NDVI time series over an area from the GeoTIFFs stacfetch downloaded.

    python examples/ndvi_timeseries.py --provider sandbox

Downloads B04 (red), B08 (NIR) and SCL for a small field, masks clouds with SCL (keeps classes
4 vegetation, 5 bare soil, 6 water, 11 snow) and prints the mean NDVI of each acquisition.
Acquisitions with less than --min-clear percent clear pixels over the field are not downloaded
at all (stacfetch screens each one with a small SCL request first); a contact sheet PNG of the
rest is written next to the files.
"""

from __future__ import annotations

import argparse

import numpy as np
import rasterio

import stacfetch

CLEAR = (4, 5, 6, 11)


def mean_ndvi(path) -> tuple[str, float | None, float]:
    with rasterio.open(path) as src:
        names = list(src.descriptions)
        red = src.read(names.index("B04") + 1).astype("float64")
        nir = src.read(names.index("B08") + 1).astype("float64")
        scl = src.read(names.index("SCL") + 1)
        when = src.tags().get("ACQUISITION_DATETIME", path.stem)
    valid = np.isin(scl, CLEAR) & (red + nir > 0)
    clear_share = float(valid.mean()) * 100
    if not valid.any():
        return when, None, clear_share
    ndvi = (nir[valid] - red[valid]) / (nir[valid] + red[valid])
    return when, float(ndvi.mean()), clear_share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--min-clear", type=float, default=50.0, help="percent clear over the field")
    args = parser.parse_args()
    result = stacfetch.get(
        [[34.60, 31.58], [34.70, 31.58], [34.70, 31.66], [34.60, 31.66], [34.60, 31.58]],  # lon, lat
        "2022-01-01", "2022-02-28",
        bands="B04,B08,SCL", resolution=20, provider=args.provider, out=args.out,
        min_clear=args.min_clear,
    )
    print(f"{'acquired':22} {'NDVI':>6} {'clear %':>8}")
    for path in result.paths:
        when, ndvi, clear = mean_ndvi(path)
        print(f"{when:22} {'   n/a' if ndvi is None else f'{ndvi:6.3f}'} {clear:8.1f}")
    for share in result.cloudy:
        print(f"skipped (cloudy over the field): {share.describe()}")
    if result.paths:
        from stacfetch.preview import contact_sheet

        for sheet in contact_sheet(result.paths[0].parent):
            print(f"contact sheet: {sheet}")


if __name__ == "__main__":
    main()
