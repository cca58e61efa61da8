"""The rate limiter every worker thread and session of a run shares (pause, pace, counters)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

log = logging.getLogger(__name__)

__all__ = ["LimiterStats", "RateLimiter"]


@dataclass(frozen=True)
class LimiterStats:
    """A snapshot of what a :class:`RateLimiter` saw."""

    requests: int
    retries: dict[str, int]
    slept_seconds: float
    requests_per_minute: float | None


WINDOW_SECONDS = 60.0
WINDOW_MARGIN = 0.25  # seconds added to each window for the arrival jitter of requests
LEARN_WINDOW_WAIT = 0.1  # a 429 asking to wait this share of a window or more teaches a limit
WINDOW_RECOVERY_PERIODS = 5  # a learnt window is relaxed (x1.25) after 5 quiet recovery periods


class RateLimiter:
    """One per run, shared by every worker thread and session.

    * **Shared pause**: a 429 anywhere moves a shared "not before" time forward by what the
      server asked; every thread's next request waits for it.
    * **Pacing**: with ``requests_per_minute`` (e.g. 300 on the CDSE free tier) at most that
      many requests leave in any trailing minute (a sliding window, the stricter reading of
      the service's per-minute policy), so the run stays under the limit instead of bouncing
      off it, without idling while the budget allows a burst.
    * **Adaptive**: with no configured rate, a 429 (once five or more requests were seen, so
      one early 429 does not throttle a whole run) teaches two limits:
      - a window, when the 429 asks to wait 6 s or more (a spent per-minute budget, not a
        passing overload): 95 % of the sends in the trailing minute, which is what the limit
        let through (CDSE's 300/min: the run then paces like ``--rate-limit 300``); a 429
        while the window is nearly full lowers it by ``adaptive_factor``; five
        ``recovery_seconds`` without a 429 raise it by 25 % (a passing overload must not slow
        the rest of a run, but overshooting a per-minute budget costs a long pause) until
        it is dropped;
      - a pace of ``adaptive_factor`` × the rate observed over the last minute (at least
        ``min_requests_per_minute``), for limits counted over shorter periods; a further 429
        lowers it again; each ``recovery_seconds`` without a 429 raises it by 50 % until it
        no longer matters and is dropped.
    * **Counters**: requests, retries by reason (``429``, ``5xx``, ``connection``,
      ``401-refresh``), total seconds slept.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        *,
        burst: float = 1.0,
        adaptive: bool = True,
        adaptive_factor: float = 0.8,
        min_requests_per_minute: float = 6.0,
        recovery_seconds: float = 60.0,
        window_seconds: float = WINDOW_SECONDS,
    ) -> None:
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        self._lock = threading.Lock()
        self._configured = requests_per_minute
        self._adaptive_rpm: float | None = None
        self._adaptive = adaptive
        self._factor = adaptive_factor
        self._min_rpm = min_requests_per_minute
        self._recovery = recovery_seconds
        self._burst = max(1.0, burst)
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._not_before = 0.0
        self._last_429 = -math.inf
        self._recent: deque[float] = deque()
        self._sent: deque[float] = deque()  # send times within the last window
        self._learned_window: int | None = None  # sends per window learnt from a 429
        self._window_checked = -math.inf  # when the learnt window was last set or relaxed
        self._window = float(window_seconds)
        self._requests = 0
        self._retries: Counter[str] = Counter()
        self._slept = 0.0

    # -- state ----------------------------------------------------------------------------
    @property
    def requests_per_minute(self) -> float | None:
        """The pace in force now: the configured one, else the adaptive one, else None."""
        with self._lock:
            return self._rate_locked(time.monotonic())

    def stats(self) -> LimiterStats:
        with self._lock:
            return LimiterStats(
                requests=self._requests,
                retries=dict(self._retries),
                slept_seconds=round(self._slept, 3),
                requests_per_minute=self._rate_locked(time.monotonic()),
            )

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"RateLimiter(requests_per_minute={s.requests_per_minute}, requests={s.requests}, "
            f"retries={s.retries}, slept_seconds={s.slept_seconds})"
        )

    def _rate_locked(self, now: float) -> float | None:
        if self._configured is not None:
            return self._configured
        quiet = self._recovery * WINDOW_RECOVERY_PERIODS
        if self._learned_window is not None and now - self._window_checked >= quiet:
            # slowly: overshooting a per-minute budget costs a pause of up to a minute
            periods = int((now - self._window_checked) // quiet)
            self._learned_window = int(self._learned_window * 1.25**periods) + 1
            self._window_checked += periods * quiet
            if self._learned_window > 100 * max(len(self._sent), 1):
                self._learned_window = None
        if self._adaptive_rpm is not None and now - self._last_429 >= self._recovery:
            # one quiet period: speed up by half, and forget the pace once it is irrelevant
            periods = int((now - self._last_429) // self._recovery)
            self._adaptive_rpm *= 1.5**periods
            self._last_429 += periods * self._recovery
            if self._adaptive_rpm > 100 * max(self._observed_rpm_locked(now), self._min_rpm):
                self._adaptive_rpm = None
        return self._adaptive_rpm

    def _observed_rpm_locked(self, now: float) -> float:
        while self._recent and now - self._recent[0] > 60.0:
            self._recent.popleft()
        if not self._recent:
            return 0.0
        span = max(1.0, now - self._recent[0])
        return len(self._recent) * 60.0 / span

    # -- use ------------------------------------------------------------------------------
    def acquire(self) -> float:
        """Block until a request may be sent; count it; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                wait = max(0.0, self._not_before - now)
                rate = self._rate_locked(now)
                span = self._window + WINDOW_MARGIN
                while self._sent and now - self._sent[0] >= span:
                    self._sent.popleft()
                limit = self._window_limit_locked()
                if limit is not None and len(self._sent) >= limit:
                    # a known or learnt limit (e.g. 300/min): at most that many sends in any
                    # trailing minute, as the service counts; a burst up to it is allowed
                    wait = max(wait, self._sent[0] + span - now)
                if self._configured is None and rate is not None:
                    per_second = rate / 60.0
                    self._tokens = min(
                        self._burst, self._tokens + (now - self._refilled) * per_second
                    )
                    self._refilled = now
                    if self._tokens < 1.0:
                        wait = max(wait, (1.0 - self._tokens) / per_second)
                else:
                    self._refilled = now
                if wait <= 0.0:
                    self._sent.append(now)
                    if self._configured is None and rate is not None:
                        self._tokens -= 1.0
                    self._requests += 1
                    self._recent.append(now)
                    if len(self._recent) > 10_000:
                        self._recent.popleft()
                    return waited
                self._slept += wait
            time.sleep(wait)
            waited += wait

    def _window_limit_locked(self) -> int | None:
        if self._configured is not None:
            return max(1, int(self._configured * self._window / 60.0))
        return self._learned_window

    @property
    def window_limit(self) -> int | None:
        """Sends allowed in any trailing window: configured, learnt from a 429, or None."""
        with self._lock:
            self._rate_locked(time.monotonic())  # applies a quiet period's recovery
            return self._window_limit_locked()

    def pause(self, seconds: float, *, sent_at: float | None = None, asked: float | None = None) -> None:
        """A 429: nobody sends before ``now + seconds``; adapt the pace if none is set.

        ``sent_at`` (``time.monotonic()`` when the refused request left): a request sent
        before the learnt window was last set does not lower it again (the 429s of the
        other requests already in flight say nothing new). ``asked``: the wait the service
        asked for, without jitter; a shared pause that already covers it is not extended (the
        429s of a burst would otherwise stack their jitter: +5 s on a 52 s wait).
        """
        with self._lock:
            now = time.monotonic()
            if self._not_before < now + max(0.0, seconds if asked is None else asked):
                self._not_before = now + max(0.0, seconds)
            self._retries["429"] += 1
            observed = self._observed_rpm_locked(now)
            if self._configured is None and self._adaptive and len(self._recent) >= 5:
                base = observed if self._adaptive_rpm is None else min(observed, self._adaptive_rpm)
                self._adaptive_rpm = max(self._min_rpm, base * self._factor)
                in_window = sum(1 for t in self._sent if now - t < self._window)
                floor = max(1, int(self._min_rpm * self._window / 60.0))
                if self._learned_window is None:
                    # only a long wait says "your budget for this window is spent": a short
                    # one is a token bucket or a passing overload, which the pace handles
                    if seconds >= LEARN_WINDOW_WAIT * self._window:
                        self._learned_window = max(floor, int(in_window * 0.95))
                        self._window_checked = now
                elif in_window >= 0.9 * self._learned_window and (
                    sent_at is None or sent_at >= self._window_checked
                ):  # full and still refused, under the current limit
                    self._learned_window = max(floor, int(min(in_window, self._learned_window) * self._factor))
                    self._window_checked = now
                log.info("rate limited: at most %d requests per %.0f s, paced to %.0f per minute",
                         self._learned_window, self._window, self._adaptive_rpm)
            self._last_429 = now
            self._tokens = min(self._tokens, 1.0)

    def backoff(self, seconds: float, reason: str) -> None:
        """Sleep ``seconds`` for one request's retry (not shared); count it under ``reason``."""
        with self._lock:
            self._retries[reason] += 1
            self._slept += max(0.0, seconds)
        if seconds > 0:
            time.sleep(seconds)

    def count_retry(self, reason: str) -> None:
        with self._lock:
            self._retries[reason] += 1

