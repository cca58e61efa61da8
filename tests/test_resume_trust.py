"""Resume trusts nothing it has not checked; the clean-up deletes only what stacfetch wrote.

* a user's own files in ``items/`` survive a run; with ``items/`` a symlink to a folder
  outside the output folder, nothing there is deleted;
* a ``.tif`` truncated after a run is fetched again on resume (not "already complete") and
  the manifest records the good file's checksum;
* a corrupt ``catalog.json`` or item JSON from an earlier run does not cost the entries of
  other areas: they are rebuilt from the files and sidecars on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pystac
import pytest
import rasterio

from stacfetch.cli import main
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from stacfetch.testing.emulator import Emulator

pytestmark = pytest.mark.timeout(180)

AREAS = {"a": ("34.665", "31.625"), "b": ("34.700", "31.600"), "c": ("34.630", "31.650")}


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Emulator:
    with Emulator() as server:
        for name, value in {"SH_BASE_URL": server.url, "SH_TOKEN_URL": server.token_url,
                            "SH_CLIENT_ID": SANDBOX_CLIENT_ID, "SH_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
                            "STACFETCH_PROVIDER": "sentinelhub"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        yield server


def get(out: Path, area: str = "a", *extra: str) -> int:
    lon, lat = AREAS[area]
    return main(["get", "--lon", lon, "--lat", lat, "--size", "1000", "--start", "2022-01-01",
                 "--end", "2022-01-12", "--bands", "B04", "--out", str(out), "--workers", "2",
                 "-q", *extra])


def manifest_files(out: Path) -> set[Path]:
    """Files the manifest lists; each must exist with the recorded size and checksum."""
    files = set()
    for item in pystac.Catalog.from_file(str(out / "catalog.json")).get_items():
        asset = item.assets["data"]
        path = Path(asset.get_absolute_href() or "").resolve()
        assert path.is_file(), path
        assert path.stat().st_size == asset.extra_fields["file:size"], path
        digest = "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == asset.extra_fields["file:checksum"], path
        files.add(path)
    return files


def tifs(out: Path) -> set[Path]:
    return {p.resolve() for p in out.rglob("*.tif")}


# --- 2. never delete what stacfetch did not write ------------------------------------------
def test_a_users_own_files_in_items_survive(emu: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "items").mkdir(parents=True)
    mine = out / "items" / "my-notes.json"
    mine.write_text('{"mine": true}')
    (out / "items" / "readme.txt").write_text("mine too")
    assert get(out) == 0
    assert get(out, "b") == 0
    assert mine.read_text() == '{"mine": true}'
    assert (out / "items" / "readme.txt").exists()


def test_nothing_is_deleted_through_a_symlinked_items_folder(emu: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    victim = outside / "important.json"
    victim.write_text('{"keep": "me"}')
    out.mkdir()
    (out / "items").symlink_to(outside, target_is_directory=True)
    assert get(out) == 0
    assert victim.read_text() == '{"keep": "me"}', "a file outside the output folder was touched"


# --- 3. resume trusts nothing it has not checked ---------------------------------------------
def test_a_truncated_file_is_fetched_again_and_the_manifest_has_the_good_checksum(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert get(out) == 0
    victim = sorted(tifs(out))[0]
    good = hashlib.sha256(victim.read_bytes()).hexdigest()
    size = victim.stat().st_size
    with open(victim, "r+b") as fh:  # a copy cut short, a disk that lost the tail
        fh.truncate(int(size * 0.6))
    before = emu.log.count(kind="process")
    capsys.readouterr()
    assert get(out, "a", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert str(victim) in [str(Path(p).resolve()) for p in result["written"]], result
    assert emu.log.count(kind="process") > before, "the truncated file was not fetched again"
    with rasterio.open(victim) as src:
        src.read()
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == good
    assert victim in manifest_files(out)


def test_a_truncated_file_counts_in_the_budget_before_any_request(emu: Emulator, tmp_path: Path) -> None:
    """--max-pu, the disk check and screening see the same completeness as the run: a file
    cut short is to be downloaded, so a tiny --max-pu refuses it before any Process request."""
    out = tmp_path / "out"
    assert get(out) == 0
    assert get(out, "a", "--max-pu", "0.0001") == 0  # all complete: nothing to pay for
    victim = sorted(tifs(out))[0]
    with open(victim, "r+b") as fh:
        fh.truncate(int(victim.stat().st_size * 0.6))
    before = emu.log.count(kind="process")
    assert get(out, "a", "--max-pu", "0.0001") == 2  # BudgetError: a usage error
    assert emu.log.count(kind="process") == before, "the truncated file was downloaded past --max-pu"


def test_a_corrupt_catalog_does_not_lose_other_areas(emu: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert get(out, "a") == 0
    assert get(out, "b") == 0
    (out / "catalog.json").write_text('{"type": "Catalog", "id": "x", "links": [')  # cut short
    assert get(out, "c") == 0
    assert manifest_files(out) == tifs(out)


def test_a_corrupt_item_file_does_not_lose_other_entries(emu: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert get(out, "a") == 0
    assert get(out, "b") == 0
    broken = sorted((out / "items").glob("*.json"))[0]
    broken.write_bytes(broken.read_bytes()[:40])
    assert get(out, "c") == 0
    assert manifest_files(out) == tifs(out)
    assert len(tifs(out)) >= 3


def test_a_skipped_file_with_its_recorded_checksum_is_not_fetched_again(
    emu: Emulator, tmp_path: Path
) -> None:
    """The other side of the truncated-file test: an intact file costs no request."""
    out = tmp_path / "out"
    assert get(out) == 0
    before = emu.log.count(kind="process")
    assert get(out) == 0
    assert emu.log.count(kind="process") == before
    assert manifest_files(out) == tifs(out)


def test_corrupt_manifest_items_leave_no_stray_files(emu: Emulator, tmp_path: Path) -> None:
    """Item files of entries that are gone are removed, but only the ones stacfetch wrote."""
    out = tmp_path / "out"
    assert get(out) == 0
    gone = sorted(tifs(out))[0]
    os.unlink(gone)
    os.unlink(f"{gone}.json")
    assert get(out, "a") == 0  # fetched again, listed once
    assert manifest_files(out) == tifs(out)
    names = {p.name for p in (out / "items").glob("*.json")}
    assert len(names) == len(tifs(out))


def test_a_resumed_run_hashes_each_complete_file_once(emu: Emulator, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's budget check and the job both verify a complete file; the run reads it once."""
    import stacfetch.raster.formats as formats

    out = tmp_path / "out"
    assert get(out) == 0
    hashed: list[Path] = []
    real = formats.sha256_file

    def counting(path: Path, *args: object, **kwargs: object) -> str:
        hashed.append(Path(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(formats, "sha256_file", counting)
    assert get(out) == 0
    assert sorted(hashed) == sorted(tifs(out)), "each complete file is read exactly once"
