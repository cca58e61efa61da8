"""Switchable faults of the emulator: rate limits, server errors, broken connections, latency.

All are off by default. Probabilities (0..1) are drawn from one RNG per kind of request, seeded
by the emulator's ``seed``: the n-th request of a kind meets the same fate in every run, whatever
the other kinds did meanwhile (a token refreshed on a timer does not shift the Process API's
faults; with one RNG for all, a soak's ~60 Process requests once met no truncation in CI). ``fail_next``
gives exact, deterministic failures for precise tests::

    emu.faults.fail_next = [429, 503]        # the next two requests fail, in this order
    emu.faults.fail_next.append(Faults.DROP)  # then one connection is cut mid-body

Faults apply only to request kinds in ``only_kinds`` (default catalog + process; add
``"token"`` to hit the token endpoint too). Every field may be changed while the server runs;
decisions are taken under a lock. ``redirect_to`` (an origin) answers every such request
with a 307 to the same path there, to check what a client carries across a redirect.

Rate limits, like the service's (all must hold at once; a refused request counts against
none of them; each 429 carries ``Retry-After`` in milliseconds):

* ``rate_limit_per_minute``: requests per sliding 60-s window; with ``rate_limit_burst`` set,
  a token bucket instead: ``burst`` requests at once, refilled at ``rate_limit_per_minute / 60``
  per second (the real service's bucket is undisclosed and may be small).
* ``pu_limit_per_minute``: processing units (:mod:`stacfetch.testing.units`) of Process
  requests, a bucket of one minute's worth refilled at ``pu_limit_per_minute / 60`` per second.
  ``Retry-After`` is the time until the bucket holds the request's cost. A request costing more
  than the whole bucket gets a 429 ``RATE_LIMIT_TOKEN_COUNT_EXCEEDS_CAPACITY`` without
  ``Retry-After`` (how the real service answers one is not documented).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

DEFAULT_KINDS = frozenset({"catalog", "process"})
EXCEEDS_CAPACITY = "RATE_LIMIT_TOKEN_COUNT_EXCEEDS_CAPACITY"


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; starts full."""

    capacity: float
    rate: float
    level: float = math.nan
    stamp: float = math.nan

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` tokens are there (0: now); refills up to ``now`` first."""
        if math.isnan(self.level):
            self.level, self.stamp = self.capacity, now
        self.level = min(self.capacity, self.level + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount


@dataclass(frozen=True)
class Decision:
    """What to do to one request. ``status`` set: answer that error instead of serving it."""

    status: int | None = None
    retry_after_ms: int | None = None  # for 429
    code: str | None = None  # error code of the answer, when not the status's usual one
    drop: bool = False  # send headers and part of the body, then shut the socket
    reset: bool = False  # close the connection without answering
    truncate: bool = False  # Process only: 200 with the body cut short
    delay_s: float = 0.0
    label: str | None = None  # what was injected, for the request log
    redirect: str | None = None  # answer 307 to this origin + the same path


@dataclass
class Faults:
    """Fault switches; see the module docstring."""

    DROP = -1  # in fail_next: cut the connection mid-body
    TRUNCATE = -2  # in fail_next: Process answers 200 with a short body
    RESET = -3  # in fail_next: close the connection before answering

    rate_429: float = 0.0
    retry_after_ms: int = 1500
    rate_limit_per_minute: int | None = None
    rate_limit_burst: int | None = None  # set: a token bucket of this size, not a window
    pu_limit_per_minute: float | None = None
    pu_bucket_seconds: float = 60.0  # the PU bucket holds this long's worth (tests: shorter)
    rate_5xx: float = 0.0
    rate_drop: float = 0.0
    rate_truncate: float = 0.0
    latency_ms: float = 0.0
    latency_spike_ms: float = 0.0
    rate_spike: float = 0.0
    token_lifetime: float | None = None
    fail_next: list[int] = field(default_factory=list)
    only_kinds: set[str] | None = None
    redirect_to: str | None = None  # e.g. "http://127.0.0.2:8001": 307 every request there

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seed = 0  # the emulator reseeds with its own seed
        self._rngs: dict[str, random.Random] = {}
        self._window: deque[float] = deque()
        self._buckets: dict[str, TokenBucket] = {}

    def reseed(self, seed: int) -> None:
        with self._lock:
            self._seed, self._rngs = seed, {}

    def _rng(self, kind: str) -> random.Random:
        """The draws of ``kind``'s requests (under the lock)."""
        rng = self._rngs.get(kind)
        if rng is None:
            rng = self._rngs[kind] = random.Random(f"{self._seed}/{kind}")
        return rng

    def reset_window(self) -> None:
        """Forget what the rate limits counted: the window empties, the buckets fill up."""
        with self._lock:
            self._window.clear()
            self._buckets.clear()

    def applies_to(self, kind: str) -> bool:
        kinds = DEFAULT_KINDS if self.only_kinds is None else self.only_kinds
        return kind in kinds

    def decide(self, kind: str, now: float | None = None, units: float | None = None) -> Decision:
        """Decide the fate of one incoming request of ``kind`` costing ``units`` PU."""
        if not self.applies_to(kind):
            return Decision()
        now = time.monotonic() if now is None else now
        with self._lock:
            rng = self._rng(kind)
            delay = self.latency_ms / 1000.0
            if self.rate_spike and rng.random() < self.rate_spike:
                delay += self.latency_spike_ms / 1000.0
            if self.fail_next:
                forced = self.fail_next.pop(0)
                return self._forced(forced, kind, delay)
            if self.redirect_to:
                return Decision(redirect=self.redirect_to, delay_s=delay, label="redirect")
            limited = self._rate_limited(now, units or 0.0, delay)
            if limited is not None:
                return limited
            if self.rate_429 and rng.random() < self.rate_429:
                return Decision(429, self.retry_after_ms, delay_s=delay, label="rate_429")
            if self.rate_5xx and rng.random() < self.rate_5xx:
                status = rng.choice((500, 502, 503))
                return Decision(status, delay_s=delay, label="rate_5xx")
            if self.rate_drop and rng.random() < self.rate_drop:
                return Decision(drop=True, delay_s=delay, label="rate_drop")
            if kind == "process" and self.rate_truncate and rng.random() < self.rate_truncate:
                return Decision(truncate=True, delay_s=delay, label="rate_truncate")
            return Decision(delay_s=delay)

    def _bucket(self, name: str, capacity: float, per_minute: float) -> TokenBucket:
        bucket = self._buckets.get(name)
        if bucket is None or (bucket.capacity, bucket.rate) != (capacity, per_minute / 60.0):
            bucket = self._buckets[name] = TokenBucket(capacity, per_minute / 60.0)
        return bucket

    def _rate_limited(self, now: float, units: float, delay: float) -> Decision | None:
        """The 429 of the first limit this request breaks (the longest wait), or None.

        Only a request every limit lets through is counted, by all of them.
        """
        waits: list[tuple[float, str]] = []
        limit, burst = self.rate_limit_per_minute, self.rate_limit_burst
        requests = None
        if limit is not None and burst is not None:
            requests = self._bucket("requests", float(max(1, burst)), float(limit))
            waits.append((requests.wait_for(1.0, now), "rate_limit_bucket"))
        elif limit is not None:
            while self._window and now - self._window[0] >= 60.0:
                self._window.popleft()
            if len(self._window) >= limit:
                waits.append((60.0 - (now - self._window[0]), "rate_limit_per_minute"))
        pus = None
        if self.pu_limit_per_minute is not None and units > 0:
            per_minute = float(self.pu_limit_per_minute)
            pus = self._bucket("pu", per_minute * self.pu_bucket_seconds / 60.0, per_minute)
            if units > pus.capacity:
                return Decision(429, None, code=EXCEEDS_CAPACITY, delay_s=delay,
                                label="pu_exceeds_capacity")
            waits.append((pus.wait_for(units, now), "pu_limit_per_minute"))
        wait, label = max(waits, default=(0.0, ""))
        if wait > 0:
            return Decision(429, max(1, math.ceil(wait * 1000)), delay_s=delay, label=label)
        if requests is not None:
            requests.take(1.0)
        elif limit is not None:
            self._window.append(now)
        if pus is not None:
            pus.take(units)
        return None

    def _forced(self, forced: int, kind: str, delay: float) -> Decision:
        label = f"fail_next:{forced}"
        if forced == self.DROP:
            return Decision(drop=True, delay_s=delay, label=label)
        if forced == self.RESET:
            return Decision(reset=True, delay_s=delay, label=label)
        if forced == self.TRUNCATE:
            return Decision(truncate=kind == "process", delay_s=delay, label=label)
        return Decision(forced, self.retry_after_ms if forced == 429 else None, delay_s=delay, label=label)

    def truncation_point(self, size: int) -> int:
        """Where to cut a body of ``size`` bytes (10-90 %, at least 1 byte short)."""
        with self._lock:
            frac = 0.1 + 0.8 * self._rng("truncation").random()
        return max(0, min(size - 1, int(size * frac)))
