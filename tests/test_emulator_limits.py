"""The emulator's rate limits: a request token bucket and a processing-unit budget."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from stacfetch.testing import render
from stacfetch.testing.emulator import Emulator
from stacfetch.testing.faults import EXCEEDS_CAPACITY, Faults
from stacfetch.testing.render import parse_request
from stacfetch.testing.units import processing_units

UTM39 = "http://www.opengis.net/def/crs/EPSG/0/32639"
BBOX = [530000.0, 4920000.0, 555000.0, 4945000.0]  # inside tile T39TRQ


def body(width: int, height: int, bands: list[str], sample_type: str = "UINT16") -> dict[str, Any]:
    """A Process body reading ``bands`` plus dataMask."""
    inputs = bands + ["dataMask"]
    script = (
        "//VERSION=3\nfunction setup() {\n"
        f"  return {{input: [{{bands: {inputs!r}, units: \"DN\"}}],\n"
        f"          output: {{bands: {len(bands)}, sampleType: \"{sample_type}\"}}}};\n}}\n"
        "function evaluatePixel(s) {\n  return [" + ", ".join(f"s.{b}" for b in bands) + "];\n}\n")
    return {
        "input": {"bounds": {"bbox": BBOX, "properties": {"crs": UTM39}},
                  "data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": {
                      "from": "2021-01-20T00:00:00Z", "to": "2021-01-25T23:59:59Z"}}}]},
        "output": {"width": width, "height": height,
                   "responses": [{"identifier": "default", "format": {"type": "image/tiff"}}]},
        "evalscript": script,
    }


def session(emu: Emulator) -> requests.Session:
    answer = requests.post(emu.token_url, data={"grant_type": "client_credentials",
                                                "client_id": SANDBOX_CLIENT_ID,
                                                "client_secret": SANDBOX_CLIENT_SECRET}, timeout=10)
    s = requests.Session()
    s.headers["Authorization"] = "Bearer " + answer.json()["access_token"]
    return s


def test_processing_units_follow_the_documented_rule() -> None:
    assert processing_units(512, 512, 3, "UINT16") == pytest.approx(1.0)
    assert processing_units(512, 512, 4, "UINT16") == pytest.approx(4 / 3)
    assert processing_units(512, 512, 3, "FLOAT32") == pytest.approx(2.0)
    assert processing_units(2001, 2001, 4, "UINT16") == pytest.approx(2001**2 / 512**2 * 4 / 3)
    assert processing_units(512, 512, 1, "UINT16") == pytest.approx(1 / 3)  # no floor on bands
    assert processing_units(10, 10, 3, "UINT16") == pytest.approx(0.01)  # area at least 0.01
    assert processing_units(10, 10, 1, "UINT16") == 0.005  # a request at least 0.005
    # dataMask is not an input band; the output sample type decides FLOAT32
    assert render.processing_units(parse_request(body(512, 512, ["B02", "B03", "B04"]))) == pytest.approx(1.0)
    assert render.processing_units(parse_request(body(512, 512, ["B04"], "FLOAT32"))) == pytest.approx(2 / 3)


def test_request_bucket_allows_a_burst_then_the_refill_rate() -> None:
    faults = Faults(rate_limit_per_minute=60, rate_limit_burst=3)
    assert [faults.decide("catalog", now=100.0).status for _ in range(3)] == [None] * 3
    refused = faults.decide("catalog", now=100.0)
    assert refused.status == 429 and refused.label == "rate_limit_bucket"
    assert refused.retry_after_ms == 1000  # one token at 1/s
    # refused attempts take no token: after the asked wait one request goes through
    assert [faults.decide("catalog", now=100.5).status for _ in range(5)] == [429] * 5
    assert faults.decide("catalog", now=101.0).status is None
    assert faults.decide("catalog", now=101.0).status == 429
    # the bucket never holds more than the burst, however long the pause
    assert [faults.decide("catalog", now=1000.0).status for _ in range(4)] == [None, None, None, 429]
    faults.reset_window()
    assert faults.decide("catalog", now=1000.0).status is None


def test_pu_budget_is_a_bucket_of_one_minute() -> None:
    faults = Faults(pu_limit_per_minute=120, rate_limit_per_minute=300, rate_limit_burst=6)
    assert [faults.decide("process", now=0.0, units=20.0).status for _ in range(6)] == [None] * 6
    refused = faults.decide("process", now=0.0, units=20.0)
    assert refused.status == 429 and refused.label == "pu_limit_per_minute"
    assert refused.retry_after_ms == 10_000  # 20 PU at 2 PU/s
    # the refusal took no request token: one refilled in 0.2 s (5/s), and a tiny request fits
    assert faults.decide("process", now=0.2, units=0.01).status is None
    assert faults.decide("catalog", now=0.2).label == "rate_limit_bucket"
    assert faults.decide("process", now=9.9, units=20.0).status == 429  # 19.99 PU refilled
    assert faults.decide("process", now=10.1, units=20.0).status is None
    assert faults.decide("catalog", now=10.1).status is None  # Catalog requests cost no PU


def test_pu_budget_over_http(emulator: Emulator) -> None:
    s = session(emulator)
    emulator.faults.pu_limit_per_minute = 2.0  # bucket of 2 PU, 1 PU per 30 s
    one_pu = body(512, 512, ["B02", "B03", "B04"])
    answers = [s.post(emulator.process_url, json=one_pu, timeout=30) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert float(answers[0].headers["x-processingunits-spent"]) == pytest.approx(1.0)
    wait = int(answers[2].headers["Retry-After"])  # milliseconds
    assert 28_000 < wait <= 30_000
    assert answers[2].json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert [r.fault for r in emulator.log.records(kind="process")] == [None, None, "pu_limit_per_minute"]
    # a request over the whole budget can never pass: a distinct code and no Retry-After
    big = s.post(emulator.process_url, json=body(1024, 1024, ["B02", "B03", "B04"]), timeout=30)
    assert big.status_code == 429 and "Retry-After" not in big.headers
    assert big.json()["error"]["code"] == EXCEEDS_CAPACITY
    # a tiny request (0.005 PU) fits in what refills in 0.2 s
    time.sleep(0.2)
    assert s.post(emulator.process_url, json=body(16, 16, ["B04"]), timeout=30).status_code == 200
    emulator.faults.reset_window()
    assert s.post(emulator.process_url, json=one_pu, timeout=30).status_code == 200


def test_request_bucket_over_http(emulator: Emulator) -> None:
    s = session(emulator)
    emulator.faults.rate_limit_per_minute = 120  # 2/s
    emulator.faults.rate_limit_burst = 2
    url = emulator.catalog_url + "collections"
    codes = [s.get(url, timeout=10) for _ in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429]
    wait = int(codes[2].headers["Retry-After"]) / 1000
    assert 0 < wait <= 0.5
    time.sleep(wait)
    assert s.get(url, timeout=10).status_code == 200
