"""The real service's recorded Catalog answers, replayed over loopback HTTP (issue 11, item 8).

Every document in ``../shared/reference/real-responses/`` is served by
:class:`stacfetch.testing.replay.ReplayServer` behind the landing page of its deployment, and
``stacfetch search --json`` and ``stacfetch get --dry-run`` run over it as a user runs them. Each
answer is either used — and then ``search --json`` prints the service's features unchanged — or
refused with a message that says what the service sent: never "internal error … this is a bug",
never a traceback, never a raw pystac-client warning on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import run_stacfetch

from stacfetch.testing.replay import REAL_HOSTS, ReplayServer, as_page, load, real_responses_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STACFETCH_SHARED_DIR") or REPO.parent / "shared")
REAL = real_responses_dir(SHARED)
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"real responses not found in {REAL}")

# landing page -> the documents replayed behind it
CASES: list[tuple[str, str, str]] = [
    ("landing_sh_v100.json", "page_sh_openapi_post_next.json", "main"),
    ("landing_sh_v100.json", "composite_page_sh_post_next_envelope_with_cdse_openapi_item.json", "main"),
    ("landing_sh_v100.json", "item_sh_v100_notebook.json", "main"),
    ("landing_sh_v100.json", "features_sh_fields_filtered.json", "main"),
    ("landing_sh_v100.json", "page_sh_distinct_dates_js.json", "main"),
    ("landing_sh_v100.json", "page_sh_v090_s2l2a_js.json", "main"),
    ("landing_sh_v100.json", "page_creodias_v090_s2l2a_js.json", "main"),
    ("landing_sh_v100.json", "page_sh_v090_s1grd_js.json", "main"),
    ("landing_sh_v090.json", "item_sh_v090_notebook_e460680.json", "main"),
    ("landing_sh_v090.json", "features_sh_v090_fields_filtered_e460680.json", "main"),
    ("landing_sh_v090.json", "page_sh_v090_s2l2a_js.json", "main"),
    ("landing_cdse_v100.json", "page_cdse_openapi_post_next.json", "CDSE"),
    ("landing_cdse_v100.json", "page_cdse_openapi_get_next.json", "CDSE"),
    ("landing_cdse_v100.json", "page_cdse_openapi_items_next_link.json", "CDSE"),
    ("landing_cdse_v100.json", "composite_page_cdse_get_next_envelope_with_cdse_openapi_item.json", "CDSE"),
    ("landing_cdse_v100.json", "item_cdse_v100_notebook.json", "CDSE"),
    ("landing_cdse_v100.json", "features_cdse_fields_filtered.json", "CDSE"),
]
IDS = [f"{c[0].split('_')[1]}{c[0].split('_')[2][:4]}-{c[1].removesuffix('.json')}" for c in CASES]
# what a refusal must name, per document whose content is not Sentinel-2 L2A items
REFUSAL_WORDS = {
    "page_sh_distinct_dates_js.json": ("distinct", "date", "string"),
    "page_sh_v090_s1grd_js.json": ("sentinel-1", "collection", "S1"),
}
BAD_WORDS = ("internal error", "this is a bug", "Traceback", "Warning", "warning:")


def _where(doc: Any) -> list[str]:
    """--lon/--lat/--start/--end that match the first feature of ``doc``."""
    page = as_page(doc)
    first = next((f for f in page["features"] if isinstance(f, dict)), None)
    if first is None:  # a distinct answer: date strings
        dates = sorted(f for f in page["features"] if isinstance(f, str))
        return ["--lon", "14.5", "--lat", "46.0", "--start", dates[0], "--end", dates[-1]]
    bbox = first.get("bbox")
    lon, lat = ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2) if bbox else (51.6, 44.6)
    stamp = (first.get("properties") or {}).get("datetime") or first["id"].split("_")[2]
    day = stamp[:10] if "-" in stamp[:10] else f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}"
    return ["--lon", f"{lon:.4f}", "--lat", f"{lat:.4f}", "--start", day, "--end", day]


def _run(args: list[str], rs: ReplayServer, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run_stacfetch(args, rs, tmp_path, timeout=120)


def _rewritten(doc: Any, origin: str) -> Any:
    text = json.dumps(doc)
    for host in REAL_HOSTS:
        text = text.replace(host, origin)
    return json.loads(text)


def _check_refusal(name: str, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode in (2, 3, 4), (proc.returncode, proc.stderr)
    words = REFUSAL_WORDS.get(name)
    assert words is None or any(w.lower() in proc.stderr.lower() for w in words), proc.stderr


@pytest.mark.parametrize(("landing", "name", "realm"), CASES, ids=IDS)
def test_search_json_is_what_the_service_sent(landing: str, name: str, realm: str, tmp_path: Path) -> None:
    doc = load(name, SHARED)
    with ReplayServer(load(landing, SHARED), [doc], realm=realm) as rs:
        proc = _run(["search", *_where(doc), "--json"], rs, tmp_path)
        recorded = _rewritten(as_page(doc)["features"], rs.url)
    for bad in BAD_WORDS:
        assert bad not in proc.stderr, proc.stderr
    if proc.returncode != 0:
        _check_refusal(name, proc)
        return
    assert name not in REFUSAL_WORDS, f"{name} is not Sentinel-2 L2A items but was used: {proc.stdout[:300]}"
    printed = json.loads(proc.stdout)["features"]
    assert printed, "the recorded items were dropped"
    by_id = {f["id"]: f for f in recorded}
    for feature in printed:
        # the service's item JSON unchanged: proj:epsg stays, no STAC 1.1 rewrite, no added links
        assert feature == by_id[feature["id"]]


@pytest.mark.parametrize(("landing", "name", "realm"), CASES, ids=IDS)
def test_dry_run_plans_or_refuses(landing: str, name: str, realm: str, tmp_path: Path) -> None:
    doc = load(name, SHARED)
    with ReplayServer(load(landing, SHARED), [doc], realm=realm) as rs:
        proc = _run(["get", *_where(doc), "--bands", "B04", "--dry-run", "--json"], rs, tmp_path)
    for bad in BAD_WORDS:
        assert bad not in proc.stderr, proc.stderr
    if proc.returncode != 0:
        _check_refusal(name, proc)
        return
    assert name not in REFUSAL_WORDS
    plan = json.loads(proc.stdout)["plan"]
    assert plan["acquisitions"] >= 1, plan
