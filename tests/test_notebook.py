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
    html_out = "\n".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    stderr = "\n".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "stacfetch GetResult" in html_out and "skipped: cloudy" in html_out  # the result's table
    assert "acquisitions" in stderr and "100%" in stderr  # tqdm.auto's bar inside Jupyter
    assert "<xarray.Dataset>" in text and "ndvi_mean" in text
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 2  # the contact sheet (a PngPath) and the plot show inline
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


def test_result_shows_itself_briefly_and_as_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import stacfetch

    result = stacfetch.get([34.665, 31.625], "2022-01-01", "2022-01-20", size=2000, bands="B04,B08,SCL",
                           provider="sandbox", out=tmp_path, min_clear=50, progress=False)
    assert capsys.readouterr().err == ""  # progress=False: silent
    text = repr(result)
    assert "\n" not in text and len(text) < 300 and str(result.folder) in text
    assert f"{len(result.written)} downloaded" in text and f"{len(result.cloudy)} skipped as cloudy" in text
    page = result._repr_html_()
    assert page.count("<tr>") == 1 + len(result.paths) + len(result.cloudy)
    assert page.count("skipped: cloudy") == len(result.cloudy) > 0 and page.count(">downloaded<") == len(result.paths)
    for share in result.screened:
        assert f">{share.clear:.0f}</td>" in page
    ds = result.to_xarray(bands="B04")
    assert list(ds.data_vars) == ["B04"] and ds.sizes["time"] == len(result.paths)
    sheet = result.contact_sheet()
    assert isinstance(sheet, Path) and sheet._repr_png_().startswith(b"\x89PNG")
    again = stacfetch.get([34.665, 31.625], "2022-01-01", "2022-01-20", size=2000, bands="B04,B08,SCL",
                          provider="sandbox", out=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "acquisitions" in err and "100%" in err  # progress=True: a bar even without a terminal
    assert "already complete" in repr(again) and "already complete" in again._repr_html_()
    planned = stacfetch.get([34.665, 31.625], "2022-01-01", "2022-01-20", size=2000, bands="B04",
                            provider="sandbox", out=tmp_path, dry_run=True)
    assert repr(planned).startswith("GetResult(dry run:") and ">planned<" in planned._repr_html_()
