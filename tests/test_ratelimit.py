"""The run's rate limiter: token buckets for requests and PU, lessons from 429s, memory."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stacfetch.budget import max_px_for_budget
from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Settings
from stacfetch.errors import ServiceError
from stacfetch.http import LimitMemory, RateLimiter, open_session
from stacfetch.http.ratelimit import costing
from stacfetch.plan import estimate_processing_units
from stacfetch.testing.emulator import Emulator
from stacfetch.testing.faults import Faults

UTM39 = "http://www.opengis.net/def/crs/EPSG/0/32639"


def settings_for(emu: Emulator) -> Settings:
    return Settings(provider="sentinelhub", base_url=emu.url, token_url=emu.token_url,
                    client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET)


def collections(emu: Emulator) -> str:
    return emu.url + "/api/v1/catalog/1.0.0/collections"


def three_pu_body() -> dict[str, Any]:
    """A Process request of 1024 x 768 px and 3 bands: 3 PU."""
    script = ('//VERSION=3\nfunction setup() {return {input: [{bands: ["B02", "B03", "B04"], '
              'units: "DN"}], output: {bands: 3, sampleType: "UINT16"}};}\n'
              "function evaluatePixel(s) {return [s.B02, s.B03, s.B04];}\n")
    return {"input": {"bounds": {"bbox": [530000.0, 4920000.0, 540240.0, 4927680.0],
                                 "properties": {"crs": UTM39}},
                      "data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": {
                          "from": "2021-01-20T00:00:00Z", "to": "2021-01-25T23:59:59Z"}}}]},
            "output": {"width": 1024, "height": 768,
                       "responses": [{"identifier": "default", "format": {"type": "image/tiff"}}]},
            "evalscript": script}


def hammer(threads: int, each: int, send: Any) -> None:
    """``threads`` threads calling ``send()`` ``each`` times, as a run's workers do."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(each):
                send()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors


def test_a_configured_limit_is_a_token_bucket_with_a_small_burst() -> None:
    limiter = RateLimiter(requests_per_minute=600)  # 10 a second
    started = time.monotonic()
    sent = []
    for _ in range(13):
        limiter.acquire()
        sent.append(time.monotonic() - started)
    assert sent[4] < 0.05  # a burst of five, not of a whole minute's budget
    # then 10/s on an absolute schedule (a late send does not push the later ones back)
    assert all(t >= (k - 4) * 0.1 - 0.01 for k, t in enumerate(sent))
    assert 0.75 <= sent[-1] < 1.1
    assert limiter.requests_per_minute == 600 and limiter.stats().requests == 13


def test_a_refused_attempt_counts_for_nothing_and_waiters_leave_one_by_one() -> None:
    limiter = RateLimiter(requests_per_minute=600)
    for _ in range(3):
        limiter.acquire()
    paused = time.monotonic()
    limiter.pause(0.3, asked=0.3)  # the service refused the third: ready again in 0.3 s
    times: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        limiter.acquire()
        with lock:
            times.append(time.monotonic() - paused)

    hammer(4, 1, one)
    times.sort()
    assert times[0] >= 0.29
    # released at the pace, not all at once when the pause ends
    assert all(t >= 0.29 + k * 0.1 - 0.01 for k, t in enumerate(times))
    assert limiter.stats().retries == {"429": 1}


def test_adaptive_limiter_learns_a_token_bucket_and_remembers_it(tmp_path: Path) -> None:
    memory = LimitMemory(tmp_path / "limits.json", "deployment+client")
    with Emulator(faults=Faults(rate_limit_per_minute=1200, rate_limit_burst=5)) as emu:
        limiter = RateLimiter(memory=memory)
        with open_session(settings_for(emu), limiter=limiter, pool_size=8) as session:
            hammer(4, 20, lambda: session.get(collections(emu)).raise_for_status())
        first_429s = emu.log.settle().count(status=429)
        learnt = limiter.requests_per_minute
        # what the service let through between two moments it was ready again: 20/s
        assert learnt is not None and 0.9 * 1200 <= learnt <= 1200
        assert first_429s <= 8  # the burst's in-flight refusals and the two lessons
        assert limiter.stats().retries["429"] == first_429s

        emu.log.clear()
        emu.faults.reset_window()
        again = RateLimiter(memory=memory)  # the next run paces from its first request
        assert again.requests_per_minute == pytest.approx(learnt, rel=0.02)
        with open_session(settings_for(emu), limiter=again, pool_size=8) as session:
            hammer(4, 20, lambda: session.get(collections(emu)).raise_for_status())
        assert emu.log.settle().count(status=429) == 0


def test_a_pu_429_is_told_from_a_request_429_and_the_pu_budget_learnt() -> None:
    # 2 PU a second in a bucket of 4.5 s worth (9 PU); requests of 3 PU; requests are not the limit
    faults = Faults(rate_limit_per_minute=6000, rate_limit_burst=50, pu_limit_per_minute=120,
                    pu_bucket_seconds=4.5)
    with Emulator(faults=faults) as emu:
        limiter = RateLimiter(pu_bucket_seconds=4.5)
        with open_session(settings_for(emu), limiter=limiter, pool_size=8) as session:

            def one() -> None:
                with costing(3.0):
                    session.post(emu.process_url, json=three_pu_body()).raise_for_status()

            started = time.monotonic()
            hammer(2, 5, one)
            seconds = time.monotonic() - started
        log = emu.log.settle()
    refused = [r for r in log.records(kind="process") if r.status == 429]
    assert refused and all(r.fault == "pu_limit_per_minute" for r in refused)
    stats = limiter.stats()
    assert stats.pu_429s == len(refused) <= 3 and stats.requests_per_minute is None
    assert stats.pu_per_minute is not None and 0.8 * 120 <= stats.pu_per_minute <= 120
    assert seconds < (30 - 9) / 2 * 1.3  # paced near the refill rate, not bouncing


def test_429s_at_info_level_log_without_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stacfetch.http.ratelimit")
    limiter = RateLimiter()
    for wait in (0.001, 0.002, 8.0):
        limiter.acquire()
        limiter.pause(wait, asked=wait)
    assert caplog.records
    for record in caplog.records:
        assert record.getMessage()  # formatting a message never raises (it did: %d of None)


def test_the_run_does_not_give_up_while_the_waits_asked_are_short() -> None:
    with Emulator(faults=Faults(retry_after_ms=1)) as emu:
        emu.faults.fail_next = [429] * 15
        limiter = RateLimiter(adaptive=False)
        with open_session(settings_for(emu), limiter=limiter) as session:
            assert session.get(collections(emu)).status_code == 200
    assert limiter.stats().retries == {"429": 15}


def test_a_request_larger_than_the_pu_budget_is_split() -> None:
    assert max_px_for_budget(None, 12, "uint16") == 2500
    assert max_px_for_budget(1000.0, 3, "uint16") == 2500  # fits: the service's own limit
    side = max_px_for_budget(20.0, 12, "uint16")  # 2500 x 2500 x 12 bands would cost 95 PU
    assert estimate_processing_units(side, side, 12, "uint16") <= 0.9 * 20.0
    assert estimate_processing_units(side + 16, side + 16, 12, "uint16") > 0.9 * 20.0


def test_cdse_paces_to_the_free_tier_unless_told(tmp_path: Path) -> None:
    from stacfetch.query import build_options

    cdse = Settings(provider="cdse", base_url=None, token_url=None, output_dir=tmp_path)
    options = build_options(cdse, dry_run=True)
    assert (options.requests_per_minute, options.pu_limit) == (300.0, 300.0)
    assert options.limits_note is not None and "free tier" in options.limits_note
    paid = build_options(cdse, dry_run=True, requests_per_minute=1000, pu_limit="2000")
    assert (paid.requests_per_minute, paid.pu_limit, paid.limits_note) == (1000.0, 2000.0, None)
    other = build_options(Settings(provider="sentinelhub", base_url=None, token_url=None,
                                   output_dir=tmp_path), dry_run=True)
    assert (other.requests_per_minute, other.pu_limit, other.limits_note) == (None, None, None)


def test_a_429_without_remedy_ends_the_request() -> None:
    body = three_pu_body()
    body["output"].update(width=2500, height=2500)  # 23.8 PU: more than the bucket of 12
    with (
        Emulator(faults=Faults(pu_limit_per_minute=12)) as emu,
        open_session(settings_for(emu), limiter=RateLimiter()) as session,
        pytest.raises(ServiceError, match="--pu-limit"),
    ):
        session.post(emu.process_url, json=body)


def test_a_spent_window_is_learnt_from_what_was_surely_let_through() -> None:
    limiter = RateLimiter()
    for _ in range(12):  # answered: let through
        limiter.acquire()
        limiter.done()
    for worker in ("a", "b", "c"):  # still in flight when the 429 comes: may be refused too
        limiter.acquire(key=worker)
    limiter.acquire()
    limiter.pause(50.0, asked=50.0)  # "come back in 50 s": this minute's budget is spent
    assert limiter.window_limit == 12


def test_adaptive_slow_start_lets_the_first_429_refuse_one_request(tmp_path: Path) -> None:
    # scenario b in small: a bucket of 5 refilled at 5/s; four workers, 20 ms a request
    memory = LimitMemory(tmp_path / "limits.json", "deployment+client")
    faults = Faults(rate_limit_per_minute=300, rate_limit_burst=5, latency_ms=20)
    with Emulator(faults=faults) as emu:
        limiter = RateLimiter(memory=memory)
        with open_session(settings_for(emu), limiter=limiter, pool_size=8) as session:
            hammer(4, 5, lambda: session.get(collections(emu)).raise_for_status())
        log = emu.log.settle()
        # The slow start opens one more per answer, so by the time the burst of 5 is spent
        # two or three workers may be out: the first round of 429s is those (without the slow
        # start the first refused request had 2-3 others sent in the same ms: 12 of 12 runs;
        # with it the next left >= 17 ms later, on an answer). Then one in flight: the lesson
        # and at most one probe.
        refused = sorted(r.started for r in log.records() if r.status == 429)
        first_round = [t for t in refused if t < refused[0] + 0.1]
        assert all(t - refused[0] > 0.005 for t in first_round[1:]), refused
        assert len(first_round) <= 3 and len(refused) - len(first_round) <= 2, refused
        learnt = limiter.requests_per_minute
        assert learnt is not None and 0.85 * 300 <= learnt <= 1.1 * 300

        emu.log.clear()
        emu.faults.reset_window()
        again = RateLimiter(memory=memory)  # remembered: paced from the first request
        with open_session(settings_for(emu), limiter=again, pool_size=8) as session:
            hammer(4, 5, lambda: session.get(collections(emu)).raise_for_status())
        assert emu.log.settle().count(status=429) == 0


def test_told_rate_uses_the_burst_and_never_sends_above_the_bucket() -> None:
    faults = Faults(rate_limit_per_minute=300, rate_limit_burst=5, latency_ms=20)
    with Emulator(faults=faults) as emu:
        limiter = RateLimiter(requests_per_minute=300)
        with open_session(settings_for(emu), limiter=limiter, pool_size=8) as session:
            hammer(4, 6, lambda: session.get(collections(emu)).raise_for_status())
        log = emu.log.settle()
    assert log.count(status=429) == 0
    api = sorted(r.started for r in log.records() if r.kind != "token")
    assert len(api) == 24
    # the token request counts against no API budget: the whole burst of 5 is there for the API
    assert api[4] - api[0] < 0.15
    # and never more than the bucket: 5 at once, then 5 a second (a little arrival jitter)
    for i in range(len(api)):
        for j in range(i + 5, len(api)):
            assert api[j] - api[i] >= (j - i + 1 - 5) / 5.0 - 0.05


def test_a_smaller_service_burst_shrinks_the_told_one() -> None:
    faults = Faults(rate_limit_per_minute=600, rate_limit_burst=2, latency_ms=10)
    with Emulator(faults=faults) as emu:
        limiter = RateLimiter(requests_per_minute=600)
        with open_session(settings_for(emu), limiter=limiter, pool_size=8) as session:
            hammer(4, 3, lambda: session.get(collections(emu)).raise_for_status())
            first = emu.log.settle().count(status=429)
            time.sleep(1.0)  # idle: both buckets fill up again
            hammer(4, 2, lambda: session.get(collections(emu)).raise_for_status())
        after = emu.log.settle().count(status=429) - first
    assert 1 <= first <= 3  # the service's bucket of 2 showed once ...
    assert after == 0  # ... and the next burst after a pause keeps to it


def test_a_remembered_pu_budget_and_the_slow_start_leave_no_429(tmp_path: Path) -> None:
    # scenario c in small: PU bind (2 PU/s, a bucket of 15), requests a small burst of 3
    memory = LimitMemory(tmp_path / "limits.json", "deployment+client")
    faults = Faults(rate_limit_per_minute=6000, rate_limit_burst=3, pu_limit_per_minute=120,
                    pu_bucket_seconds=7.5, latency_ms=20)
    counts = []
    known = []  # the PU budget each pass starts with (the second: remembered)
    with Emulator(faults=faults) as emu:
        for _ in range(2):
            emu.log.clear()
            emu.faults.reset_window()
            limiter = RateLimiter(memory=memory, pu_bucket_seconds=7.5)
            known.append(limiter.pu_per_minute)
            with open_session(settings_for(emu), limiter=limiter, pool_size=8) as session:

                def one(session: Any = session) -> None:
                    with costing(3.0):
                        session.post(emu.process_url, json=three_pu_body()).raise_for_status()

                hammer(4, 2, one)
            log = emu.log.settle()
            counts.append((log.count(status=429),
                           sum(1 for r in log.records() if r.fault == "rate_limit_bucket")))
    (first, first_requests), (second, _) = counts
    assert first_requests == 0  # four workers, a burst of 3: the slow start sent no fourth
    # At this scale (a 15-PU bucket, 3-PU requests, 4 workers) the first pass's count varies
    # with timing: 1-3 PU 429s (two requests may meet the spent bucket together).
    assert 1 <= first <= 3  # the PU budget's lesson(s)
    # remembered, and never above what the service let through (138.6 was kept once: a lesson
    # corrected by a later 429 was not saved; 99.2 under CI's load: low is only slower)
    assert known[0] is None and known[1] is not None and 60 <= known[1] <= 121
    assert second == 0  # 10 of 10 once the corrected lesson was saved (3 of 11 before)


def test_a_first_pu_lesson_corrected_by_a_later_429_is_remembered_corrected(tmp_path: Path) -> None:
    """Two requests in flight on a spent PU bucket, the later-sent one's 429 handled first:
    its lesson counts the earlier one as let through; that one's 429 lowers the pace, and
    the memory must keep the lowered rate, not the overcount (a remembered run went on at
    138.6 PU/min for 120 that way)."""
    memory = LimitMemory(tmp_path / "limits.json", "deployment+client")
    limiter = RateLimiter(memory=memory, pu_bucket_seconds=7.5)
    with costing(3.0):
        for i in range(5):  # 15 PU let through
            limiter.acquire(key=i)
            limiter.done(key=i)
        limiter.acquire(key="earlier")
        limiter.acquire(key="later")
    limiter.pause(1.25, key="later")
    overcounted = RateLimiter(memory=memory).pu_per_minute
    limiter.pause(1.25, key="earlier")
    corrected = limiter.pu_per_minute
    assert overcounted is not None and corrected is not None and corrected < overcounted
    assert RateLimiter(memory=memory).pu_per_minute == pytest.approx(corrected)


def test_a_lesson_of_one_request_is_probed_up_to_twice_its_rate() -> None:
    """One request let through between two ready moments: the rate may be up to twice that
    (the count is off by a whole request); the probe reaches that bound in PROBE_SECONDS
    (at 0.4 %/s, a run that learnt 200 for 300 a minute never rose to it)."""
    from stacfetch.http import ratelimit

    limiter = RateLimiter()
    t0 = time.monotonic()
    limiter.acquire(key="a")
    limiter.pause(0.2, asked=0.2, key="a")  # refused: ready at t0 + 0.2, one in flight from now
    limiter.acquire(key="c")  # waits for t0 + 0.2
    limiter.done(key="c")
    limiter.acquire(key="d")
    limiter.pause(0.25, asked=0.25, key="d")  # refused: one let through over the span
    budget = limiter._requests
    learnt = budget.estimate
    assert learnt is not None and 60 * learnt == pytest.approx(60 / (time.monotonic() + 0.25 - t0 - 0.2), rel=0.3)
    budget.probe(time.monotonic() + ratelimit.PROBE_SECONDS)
    assert budget.bucket is not None and budget.bucket.rate == pytest.approx(2 * learnt, rel=0.01)
