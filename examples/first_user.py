"""The first user's job: every Sentinel-2 L2A image of a point for a few days in January 2022.

Run it without an account against the built-in sandbox (synthetic pixels):
    python examples/first_user.py --provider sandbox
With a real account, put SH_CLIENT_ID / SH_CLIENT_SECRET / STACFETCH_OUTPUT_DIR in .env and:
    python examples/first_user.py --provider cdse

Note the order: longitude first. The point 34.665 E, 31.625 N is on the coast at Ashkelon;
swapping the two numbers puts it in the open sea between Cyprus and Egypt.
"""

from __future__ import annotations

import argparse

import rasterio

import stacfetch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default=None, help="sentinelhub, cdse or sandbox")
    parser.add_argument("--out", default=None, help="output folder (default: STACFETCH_OUTPUT_DIR)")
    args = parser.parse_args()

    result = stacfetch.get(
        [34.665, 31.625],          # lon, lat
        "2022-01-20", "2022-01-25",  # the end day is included
        size=5000,                  # a 5 km square around the point
        bands="all",
        provider=args.provider,
        out=args.out,
        preview=True,               # a true-colour PNG next to each GeoTIFF
    )
    print(result.summary())
    for path in result.paths:
        with rasterio.open(path) as src:
            tags = src.tags()
            print(f"{path.name}: {src.width}x{src.height} px, {src.count} bands, {src.crs}, "
                  f"acquired {tags.get('ACQUISITION_DATETIME')}, cloud {tags.get('CLOUD_COVER')} %, "
                  f"reflectance = DN x {src.scales[0]:g}")
    for png in result.previews:
        print(f"quicklook: {png}")


if __name__ == "__main__":
    main()
