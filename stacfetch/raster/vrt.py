"""One-band VRTs over a multi-band GeoTIFF: how tools that read one band per asset see our files.

stackstac (and any reader that wants "each band a separate asset") opens single-band rasters
only. ``band_vrt`` writes a tiny GDAL VRT for band ``n`` of a file: same grid, CRS, data type,
description, nodata or per-dataset mask, scale and offset, pixels read straight from the file
(``SimpleSource``, no resampling). The source path is relative to the VRT, so a folder with
its manifest can be moved as a whole.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import rasterio
from rasterio.enums import MaskFlags

from .files import atomic_write_text

__all__ = ["GDAL_DATA_TYPES", "band_vrt_text", "write_band_vrt"]

GDAL_DATA_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
                   "uint32": "UInt32", "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def _simple_source(parent: ET.Element, source: str, band: str, width: int, height: int) -> None:
    element = ET.SubElement(parent, "SimpleSource")
    ET.SubElement(element, "SourceFilename", relativeToVRT="1").text = source
    ET.SubElement(element, "SourceBand").text = band
    for tag in ("SrcRect", "DstRect"):
        ET.SubElement(element, tag, xOff="0", yOff="0", xSize=str(width), ySize=str(height))


def band_vrt_text(tif: Path, vrt: Path, index: int) -> str:
    """The VRT XML exposing band ``index`` (1-based) of ``tif`` as a one-band dataset at ``vrt``."""
    with rasterio.open(tif) as src:
        width, height, t = src.width, src.height, src.transform
        data_type = GDAL_DATA_TYPES[src.dtypes[index - 1]]
        nodata = src.nodata
        scale, offset = src.scales[index - 1], src.offsets[index - 1]
        description = src.descriptions[index - 1] or ""
        wkt = src.crs.to_wkt()
        per_dataset_mask = MaskFlags.per_dataset in src.mask_flag_enums[index - 1]
    source = Path(os.path.relpath(Path(tif).resolve(), Path(vrt).resolve().parent)).as_posix()
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = wkt
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    band = ET.SubElement(root, "VRTRasterBand", dataType=data_type, band="1")
    ET.SubElement(band, "Description").text = description
    if nodata is not None:
        ET.SubElement(band, "NoDataValue").text = repr(float(nodata))
    ET.SubElement(band, "Offset").text = repr(float(offset if offset is not None else 0.0))
    ET.SubElement(band, "Scale").text = repr(float(scale if scale is not None else 1.0))
    _simple_source(band, source, str(index), width, height)
    if per_dataset_mask:  # the file's internal mask band, as this band's mask
        mask = ET.SubElement(ET.SubElement(band, "MaskBand"), "VRTRasterBand", dataType="Byte")
        _simple_source(mask, source, "mask,1", width, height)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_band_vrt(tif: Path, vrt: Path, index: int) -> Path:
    """Write (atomically, only when it changed) the one-band VRT of band ``index`` of ``tif``."""
    text = band_vrt_text(tif, vrt, index)
    try:
        if vrt.read_text(encoding="utf-8") == text:
            return vrt
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(vrt, text)
    return vrt
