"""The example notebook runs top to bottom against the sandbox (executed with nbclient)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("xarray")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "ndvi_timeseries.ipynb"


def test_ndvi_notebook_runs_against_the_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SH_", "STACFETCH_")) and name != "STACFETCH_SHARED_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the cell's traceback on any error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "downloaded" in text and "skipped as cloudy" in text
    assert "<xarray.Dataset>" in text and "ndvi_mean" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot shows inline
    assert "data:image/png;base64," in str([o.get("data", {}).get("text/html", "") for o in outputs])
    assert list((tmp_path / "out").rglob("*.tif"))


def test_pictures_show_inline_and_stay_paths(tmp_path: Path) -> None:
    import stacfetch
    from stacfetch.preview import contact_sheet, quicklook

    result = stacfetch.get([34.665, 31.625], "2022-01-20", "2022-01-22", size=2000, bands="truecolor,SCL",
                           provider="sandbox", out=tmp_path)
    look = quicklook(result.paths[0])
    assert isinstance(look, Path) and look == result.paths[0].with_suffix(".png")
    assert look._repr_png_() == look.read_bytes() and look.read_bytes().startswith(b"\x89PNG")
    sheets = contact_sheet(tmp_path)
    assert isinstance(sheets, list) and len(sheets) == 1 and sheets[0].name == "contact-sheet.png"
    page = sheets._repr_html_()
    assert page.count("data:image/png;base64,") == 1 and "contact-sheet.png" in page
