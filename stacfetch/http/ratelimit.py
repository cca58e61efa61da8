"""The run's rate limiter: every request of a run is paced under the service's budgets.

Sentinel Hub counts **requests** and **processing units** (PU) per minute, and every policy
must hold at once (CDSE free tier: 300 requests/min and 300 PU/min). One
:class:`RateLimiter` per run, shared by every thread and session, keeps a budget for each:

* **Configured** (``requests_per_minute``, ``pu_per_minute``): a token bucket on an absolute
  schedule, ``N / 60`` per second with a small burst (requests: 5, made smaller by a 429 that
  comes while this bucket still held tokens; PU: one minute's worth, a little under the
  limit), plus a sliding 60-s window cap for requests. The run paces instead of bouncing off
  the limit.
* **Adaptive** (not configured): until a request budget is known, a slow start limits the
  requests in flight: one at first, one more for each answer while others wait (as TCP's
  slow start), and one more for each 0.1 s the oldest has been out (slow answers come at a
  rate no budget minds), so the first 429 refuses one request, not every worker's; while no
  PU budget is known and the last minute's PU reach 50, requests of 1 PU or more leave at
  least 0.15 s apart (at most 400 PU/min of them before a PU 429 or ``pu_per_minute`` says
  more), so two do not meet a spent PU bucket together. A 429 is
  put down to one budget (a PU 429 only hits Process requests, asks for a wait long against
  a request interval, and comes when the PU sent lately, not the requests, could fill a
  plan's budget). Then:

  - requests, token bucket: one request in flight until a second 429; the refill rate is
    what the service let through between the two moments it was ready again
    (``sent + Retry-After``): ``accepted / (ready_2 - ready_1)``. Two moments a fraction of
    a second apart give a coarse rate (each is a few ms off): it is paced at the rate
    itself, rising 0.4 % a second, until a 429 a long span later measures it to a few
    tenths of a percent (one more 429); a rate measured over 5 s or more is paced at 99.5 %;
  - requests, a long wait (a spent per-minute window): a window of what the last minute let
    through (never below it);
  - PU: a bucket of one minute's worth that started full gives ``p = (PU let through + cost)
    / (60 s + ready - first send)`` from one 429 (a lower bound), refined by the next pair;
  - a 429 of a request sent before the last lesson teaches nothing new.

  What was learnt is remembered per deployment and client (:class:`LimitMemory`, a small
  JSON file in the user's cache folder) and paces the next run from its start; so is the
  rate the service surely let through since the last lesson (at its ready moment the
  bucket held one request: ``(N - 1) / span`` for ``N`` answered since), when that is more
  than the rate measured. A request budget stays unknown while no request 429 came: the
  next run starts slowly again (the PU budget, if learnt, paces it from its start).
* Token requests go to the identity service, which has its own limit: no API budget counts
  them (:class:`UncountedLimiter`), as neither the service's nor the emulator's does.
* A refused attempt does not count as sent; after a 429 the bucket is aligned with the
  service's (empty until ``Retry-After``), so the waiting threads are released one by one at
  the pace, not all at once.

The PU cost of a request is set by its sender with :func:`costing` (a context variable, so
the session's send loop needs no argument for it); the service's ``x-processingunits-spent``
replaces the estimate when the response arrives (:meth:`RateLimiter.watch` hooks a session).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

log = logging.getLogger(__name__)

__all__ = ["LimitMemory", "LimiterStats", "RateLimiter", "UncountedLimiter", "costing", "current_cost"]

WINDOW_SECONDS = 60.0
WINDOW_MARGIN = 0.25  # seconds added to a window cap for the arrival jitter of requests
ARRIVAL_MARGIN = 0.02  # a bucket's schedule lags the service's by this long (arrival jitter:
# at exactly the service's schedule a request that arrives a ms early is refused)
HISTORY_SECONDS = 180.0  # sends kept for estimates
PACE_SHARE = 0.99  # a learnt rate is paced at this share of what the service let through
REQUEST_BURST = 5.0  # client-side burst of a request budget (a smaller one of the service's
# shows as a 429 while this side counted tokens to spare, and shrinks it: RateLimiter._shrink_burst)
PU_HEADROOM = 0.97  # a configured PU bucket holds this share of a minute's budget ...
PU_RATE_SHARE = 0.99  # ... and refills at this share of the configured rate
STALE_ATTEMPT = 10.0  # an attempt unanswered this long no longer holds the one-in-flight gate
LONG_WAIT = 6.0  # a request 429 asking at least this long: a spent per-minute window
MIN_BUDGET = 10.0  # no plan allows fewer than 10 requests or 10 PU a minute (trial account)
PU_WAIT = 1.0  # a Process request's 429 asking at least this long is put down to PU
LEARN_SECONDS = 15.0  # one in flight at most this long after a first request 429, if no lesson
OPEN_AFTER = 0.1  # slow start: one more in flight for each this long the oldest has been out
POLL = 0.01  # seconds a request held back by the slow start waits before asking again
PU_STAGGER = 0.15  # no PU budget known: requests of 1 PU or more leave at least this far apart
# (two sent together both meet a spent PU bucket; 0.15 s lets the first one's 429 come back) ...
PU_STAGGER_AFTER = 50.0  # ... once the last minute's PU (with theirs) reach this much
PRECISE_SPAN = 5.0  # a rate measured over at least this long is paced at PRECISE_SHARE ...
PRECISE_SHARE = 0.995  # ... (two "ready" moments a few ms off make a short span's rate coarse)
PROBE_GAIN = 0.004  # after a coarse lesson the pace rises by this share a second ...
PROBE_MAX = 1.06  # ... up to this factor, until a 429 measures the rate over a long span
PROBE_SECONDS = 20.0  # a lesson coarser than PROBE_MAX (few requests) is probed to its bound this fast
MIN_SPAN = 0.15  # seconds between two "ready" moments needed for a rate estimate
PU_HEADER = "x-processingunits-spent"
MEMORY_ENTRIES = 50  # deployments and clients remembered at most
REMEMBER_EVERY = 5.0  # seconds between two updates of the memory while answers come

_COST: contextvars.ContextVar[float] = contextvars.ContextVar("stacfetch_request_pu", default=0.0)


@contextlib.contextmanager
def costing(pu: float) -> Iterator[None]:
    """Requests sent inside this block cost ``pu`` processing units each (estimated)."""
    token = _COST.set(max(0.0, float(pu)))
    try:
        yield
    finally:
        _COST.reset(token)


def current_cost() -> float:
    """The PU cost set by :func:`costing` for requests sent now (0: none)."""
    return _COST.get()


@dataclass(frozen=True)
class LimiterStats:
    """A snapshot of what a :class:`RateLimiter` saw."""

    requests: int
    retries: dict[str, int]
    slept_seconds: float
    requests_per_minute: float | None
    pu_per_minute: float | None = None
    pu_sent: float = 0.0
    pu_429s: int = 0


class _Bucket:
    """A token bucket on an absolute schedule: ``rate`` units/s, at most ``capacity``, and
    always ``ARRIVAL_MARGIN`` behind the service's (it holds that long's refill less)."""

    def __init__(self, rate: float, capacity: float, now: float, level: float | None = None) -> None:
        self.rate = rate
        self.capacity = max(capacity, 1e-9)
        self.level = self.top if level is None else min(level, self.top)
        self.stamp = now

    @property
    def top(self) -> float:
        """The most it holds: the capacity less the margin's refill."""
        return max(self.capacity - ARRIVAL_MARGIN * self.rate, 0.5 * self.capacity)

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.top, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` may go (a cost above the whole bucket waits for a full one)."""
        self.refill(now)
        need = min(cost, self.top)
        return 0.0 if self.level >= need - 1e-9 else (need - self.level) / self.rate

    def align(self, cost: float, wait: float, now: float) -> None:
        """The service holds ``cost`` in ``wait`` seconds: this bucket a little later."""
        self.refill(now)
        self.level = min(self.level, cost - (wait + ARRIVAL_MARGIN) * self.rate)
        self.stamp = now


class _Budget:
    """One budget (requests or PU): what was sent, what is known, how it is paced."""

    def __init__(self, name: str, per_minute: float | None, *, burst: float) -> None:
        self.name = name
        self.configured = per_minute is not None
        self.source = "configured" if per_minute is not None else None  # learnt | remembered
        self.estimate: float | None = per_minute / 60.0 if per_minute else None  # units/s
        self.burst = burst
        self.bucket_seconds = WINDOW_SECONDS  # PU: the service's bucket holds this long's worth
        self.bucket: _Bucket | None = None
        self.window: float | None = per_minute if per_minute and name == "requests" else None
        self.sent: deque[tuple[float, float]] = deque()  # (send time, cost) not refused
        self.answered: deque[float] = deque()  # send times of attempts answered, not refused
        self.total = 0.0
        self.first: float | None = None
        self.ready: tuple[float, float] | None = None  # (ready time, cost) of the last lesson
        self.learnt_at = -math.inf
        self.learning = False  # one request in flight until a second 429 gives the rate
        self.first_lesson: tuple[float, float, float, float] | None = None  # PU: first, sent, ready, cost
        self.refusals = 0
        self.span: float | None = None  # seconds the rate in force was measured over
        self.probe_from: float | None = None  # a coarse rate: the pace rises from then on
        self.probe_cap = PROBE_MAX  # how far a coarse rate is probed (how fast: probe_gain)

    # -- accounting -------------------------------------------------------------------------
    def trim(self, now: float) -> None:
        while self.sent and now - self.sent[0][0] > HISTORY_SECONDS:
            self.sent.popleft()
        while self.answered and now - self.answered[0] > HISTORY_SECONDS:
            self.answered.popleft()

    def let_through(self, before: float, span: float = WINDOW_SECONDS) -> int:
        """Attempts sent in the ``span`` before ``before`` that the service surely let through
        (answered without a 429; those still in flight may be refused yet)."""
        return sum(1 for t in self.answered if before - span <= t < before)

    def in_window(self, now: float, span: float = WINDOW_SECONDS) -> float:
        return sum(c for t, c in self.sent if now - t < span)

    def between(self, start: float, end: float) -> float:
        return sum(c for t, c in self.sent if start <= t < end)

    def record(self, now: float, cost: float) -> None:
        if self.first is None:
            self.first = now
        self.sent.append((now, cost))
        self.total += cost
        if self.bucket is not None:
            self.bucket.refill(now)
            self.bucket.level -= cost

    def refuse(self, sent_at: float, cost: float) -> None:
        """A refused attempt: it counts against nothing."""
        with contextlib.suppress(ValueError):
            self.sent.remove((sent_at, cost))
            self.total -= cost
            if self.bucket is not None:
                self.bucket.level += cost

    # -- pacing -----------------------------------------------------------------------------
    @property
    def per_minute(self) -> float | None:
        """The pace in force (units per minute), or None; while a coarse rate is probed, the
        rate learnt (the probe's slow rise above it is a test, not a limit learnt)."""
        if self.bucket is None:
            return None
        if self.probe_from is not None and self.estimate is not None:
            return self.estimate * 60.0
        return self.bucket.rate * 60.0

    def pace(self, rate: float, now: float, *, share: float = PACE_SHARE) -> None:
        """Pace at ``share`` of ``rate`` units/s from now on (keeping the current level)."""
        self.estimate = rate
        paced = max(rate * share, 1e-6)
        capacity = self.burst if self.name == "requests" else paced * self.bucket_seconds
        if self.bucket is not None and self.name == "requests":
            capacity = min(capacity, self.bucket.capacity)  # a burst found too large stays small
        level = None if self.bucket is None else min(self.bucket.level, capacity)
        self.bucket = _Bucket(paced, capacity, now, level)

    def probe(self, now: float) -> None:
        """A coarse rate: raise the pace slowly (``PROBE_GAIN`` a second) until a 429 comes
        a long span after the lesson and measures the rate precisely."""
        if self.probe_from is None or self.bucket is None or self.estimate is None:
            return
        self.bucket.refill(now)  # the level so far at the old rate, then the new rate
        self.bucket.rate = self.estimate * min(self.probe_cap, 1.0 + self.probe_gain * (now - self.probe_from))

    @property
    def probe_gain(self) -> float:
        """The probe's rise a second: PROBE_GAIN, or fast enough to reach its cap in PROBE_SECONDS."""
        return max(PROBE_GAIN, (self.probe_cap - 1.0) / PROBE_SECONDS)

    def wait(self, cost: float, now: float) -> float:
        self.probe(now)
        wait = 0.0 if self.bucket is None else self.bucket.wait(cost, now)
        if self.window is not None and cost > 0:
            span = WINDOW_SECONDS + WINDOW_MARGIN
            recent = [t for t, _ in self.sent if now - t < span]
            if len(recent) >= self.window:
                wait = max(wait, recent[-int(self.window)] + span - now)
        return wait

    def shown(self) -> tuple[float, float] | None:
        """The rate the service has surely let through since the last lesson, and over how
        long: at ``ready`` its bucket held one request, so ``N`` answered since then need
        ``rate >= (N - 1) / (last - ready)`` (whatever its size). None: too short to tell."""
        if self.ready is None:
            return None
        start = self.ready[0]
        since = [t for t in self.answered if t >= start]
        if len(since) < 2 or since[-1] - start < PRECISE_SPAN:
            return None
        return (len(since) - 1) / (since[-1] - start), since[-1] - start

    def state(self) -> dict[str, Any]:
        rate, span = self.estimate, self.span
        shown = self.shown() if self.name == "requests" else None
        if shown is not None and rate is not None and shown[0] > rate:
            rate, span = shown  # the rate measured was low: what it let through since is more
        return {"per_second": rate, "window": self.window, "span": span}


class LimitMemory:
    """Learnt limits of past runs, per deployment and client, in one small JSON file."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key

    @classmethod
    def for_service(cls, base_url: str, client_id: str | None, folder: Path | None = None) -> LimitMemory:
        """The memory of ``client_id`` on ``base_url`` in the user's cache folder."""
        if folder is None:
            folder = Path(platformdirs.user_cache_dir("stacfetch"))
        digest = hashlib.sha256(f"{base_url.rstrip('/')}|{client_id or ''}".encode()).hexdigest()[:20]
        return cls(folder / "limits.json", digest)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def load(self) -> dict[str, Any]:
        entry = self._read().get(self.key)
        return entry if isinstance(entry, dict) else {}

    def save(self, entry: dict[str, Any]) -> None:
        """Store ``entry`` for this key (atomically; a failure only costs the memory)."""
        try:
            data = self._read()
            data[self.key] = {**entry, "saved": time.time()}
            if len(data) > MEMORY_ENTRIES:  # forget the deployments not seen for longest
                oldest = sorted(data, key=lambda k: (data[k] or {}).get("saved", 0)
                                if isinstance(data[k], dict) else 0)
                for key in oldest[: len(data) - MEMORY_ENTRIES]:
                    del data[key]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".limits-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("could not remember the learnt limits in %s: %s", self.path, exc)


class UncountedLimiter:
    """A run's limiter as seen by requests the API's budgets do not count: the token
    endpoint's (an identity service with its own limit; the emulator counts them nowhere
    either). Their retries and waits show in the run's stats; a 429 pauses only them."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter
        self._lock = threading.Lock()
        self._not_before = 0.0

    def acquire(self, cost: float | None = None, *, key: Any = None) -> float:
        with self._lock:
            wait = max(0.0, self._not_before - time.monotonic())
        if wait > 0:
            time.sleep(wait)
        return wait

    def pause(self, seconds: float, *, sent_at: float | None = None, asked: float | None = None,
              key: Any = None) -> None:
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + max(0.0, seconds))
        self._limiter.count_retry("429", slept=max(0.0, seconds))

    def backoff(self, seconds: float, reason: str, *, key: Any = None) -> None:
        self._limiter.count_retry(reason, slept=max(0.0, seconds))
        if seconds > 0:
            time.sleep(seconds)

    def count_retry(self, reason: str, *, slept: float = 0.0) -> None:
        self._limiter.count_retry(reason, slept=slept)

    def stats(self) -> LimiterStats:
        return self._limiter.stats()


@dataclass
class _Attempt:
    sent_at: float
    costs: dict[str, float]
    tokens: float = math.nan  # the request bucket's level when it was sent (before its own)


class RateLimiter:
    """One per run, shared by every worker thread and session (see the module docstring).

    ``requests_per_minute`` / ``pu_per_minute``: configured budgets (None: adaptive).
    ``adaptive``: learn budgets from 429s. ``memory``: where learnt limits are kept.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        *,
        pu_per_minute: float | None = None,
        adaptive: bool = True,
        memory: LimitMemory | None = None,
        learnt: dict[str, Any] | None = None,
        request_burst: float = REQUEST_BURST,
        pu_bucket_seconds: float = WINDOW_SECONDS,
    ) -> None:
        for name, value in (("requests_per_minute", requests_per_minute), ("pu_per_minute", pu_per_minute)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number")
        self._lock = threading.Lock()
        self._adaptive = adaptive
        self._memory = memory
        now = time.monotonic()
        self._requests = _Budget("requests", requests_per_minute, burst=max(1.0, request_burst))
        self._pu = _Budget("pu", pu_per_minute, burst=0.0)
        self._pu.bucket_seconds = pu_bucket_seconds
        if requests_per_minute is not None:
            self._requests.bucket = _Bucket(requests_per_minute / 60.0, self._requests.burst, now)
        if pu_per_minute is not None:
            rate = pu_per_minute / 60.0
            self._pu.bucket = _Bucket(rate * PU_RATE_SHARE, rate * pu_bucket_seconds * PU_HEADROOM, now)
        if memory is not None and adaptive:
            self._recall(memory.load(), now)
        if learnt:
            self._recall(learnt, now)
        self._not_before = 0.0
        self._attempts: dict[Any, _Attempt] = {}
        self._window = 1.0  # slow start: requests in flight allowed while no budget is known
        self._remembered_at = time.monotonic()
        self._held = False  # a request was held back by the slow start since the last answer
        self._last_costly = -math.inf  # when the last request of 1 PU or more left
        self._count = 0
        self._retries: Counter[str] = Counter()
        self._slept = 0.0

    # -- state ------------------------------------------------------------------------------
    @property
    def requests_per_minute(self) -> float | None:
        """The request pace in force now (configured, learnt or remembered), or None."""
        with self._lock:
            return self._requests.per_minute

    @property
    def pu_per_minute(self) -> float | None:
        """The PU pace in force now, or None."""
        with self._lock:
            return self._pu.per_minute

    @property
    def pu_capacity(self) -> float | None:
        """The most PU one request may cost (the PU bucket's size), if a PU budget is known."""
        with self._lock:
            bucket = self._pu.bucket
            return None if bucket is None else bucket.capacity

    @property
    def window_limit(self) -> int | None:
        """Requests allowed in any trailing minute: configured, learnt, or None."""
        with self._lock:
            window = self._requests.window
            return None if window is None else int(window)

    def stats(self) -> LimiterStats:
        with self._lock:
            return LimiterStats(
                requests=self._count,
                retries=dict(self._retries),
                slept_seconds=round(self._slept, 3),
                requests_per_minute=self._requests.per_minute,
                pu_per_minute=self._pu.per_minute,
                pu_sent=round(self._pu.total, 3),
                pu_429s=self._pu.refusals,
            )

    def __repr__(self) -> str:
        s = self.stats()
        return (f"RateLimiter(requests_per_minute={s.requests_per_minute}, pu_per_minute="
                f"{s.pu_per_minute}, requests={s.requests}, retries={s.retries})")

    # -- the three moments of an attempt ----------------------------------------------------
    def acquire(self, cost: float | None = None, *, key: Any = None) -> float:
        """Block until a request may be sent; count it; return the seconds waited.

        ``cost``: its PU (default: the :func:`costing` in force). ``key``: whose attempt
        (default: this thread); a key's previous attempt is over once it asks again.
        """
        waited = 0.0
        while True:
            wait = self.reserve(cost, key=key)
            if wait <= 0.0:
                return waited
            time.sleep(wait)
            waited += wait

    def reserve(self, cost: float | None = None, *, key: Any = None) -> float:
        """Count the attempt and return 0, or return the seconds to wait before asking again."""
        pu = current_cost() if cost is None else max(0.0, cost)
        key = threading.get_ident() if key is None else key
        with self._lock:
            now = time.monotonic()
            self._attempts.pop(key, None)
            self._requests.trim(now)
            self._pu.trim(now)
            wait = max(self._not_before - now, self._requests.wait(1.0, now))
            if pu > 0:
                wait = max(wait, self._pu.wait(pu, now))
            learning = self._requests.learning
            if learning and now - self._requests.learnt_at > LEARN_SECONDS:
                self._requests.learning = learning = False  # no second 429: no bucket to learn
            if wait <= 0.0 and (learning or self._slow_start()):
                wait = self._in_flight_wait(now, learning)
            if (wait <= 0.0 and pu >= 1.0 and self._adaptive and self._pu.bucket is None
                    and self._pu.in_window(now) + pu >= PU_STAGGER_AFTER):
                wait = max(0.0, self._last_costly + PU_STAGGER - now)
            if wait > 0.0:
                self._slept += wait
                return wait
            bucket = self._requests.bucket
            tokens = math.nan if bucket is None else bucket.level
            self._requests.record(now, 1.0)
            if pu > 0:
                self._pu.record(now, pu)
            if pu >= 1.0:
                self._last_costly = now
            self._attempts[key] = _Attempt(now, {"requests": 1.0, "pu": pu}, tokens)
            self._count += 1
            return 0.0

    def done(self, *, key: Any = None, spent: float | None = None) -> None:
        """The attempt of ``key`` was answered; ``spent``: the PU the service reported."""
        key = threading.get_ident() if key is None else key
        with self._lock:
            attempt = self._attempts.pop(key, None)
            if attempt is not None:
                self._requests.answered.append(attempt.sent_at)
                if self._held and not self._requests.learning and self._slow_start():
                    self._window = min(self._window + 1.0, 1024.0)  # an answer: one more may go
                    self._held = False
                now = time.monotonic()
                if self._requests.source == "learnt" and now - self._remembered_at > REMEMBER_EVERY:
                    self._remember()  # what was let through since the lesson may say more
            if attempt is None or spent is None:
                return
            delta = spent - attempt.costs["pu"]
            if abs(delta) > 1e-9 and attempt.costs["pu"] > 0:
                pu = self._pu
                with contextlib.suppress(ValueError):
                    pu.sent[pu.sent.index((attempt.sent_at, attempt.costs["pu"]))] = (attempt.sent_at, spent)
                pu.total += delta
                if pu.bucket is not None:
                    pu.bucket.level -= delta

    def pause(self, seconds: float, *, sent_at: float | None = None, asked: float | None = None,
              key: Any = None) -> None:
        """A 429: nobody sends before ``now + seconds``; the refused attempt counts for nothing.

        ``asked``: the wait the service asked for (``seconds`` may add jitter); a shared
        pause already covering it is not extended. ``sent_at``: when the refused attempt left,
        if the limiter did not count it itself.
        """
        key = threading.get_ident() if key is None else key
        with self._lock:
            now = time.monotonic()
            attempt = self._attempts.pop(key, None)
            asked = max(0.0, seconds if asked is None else asked)
            cost = attempt.costs["pu"] if attempt else current_cost()
            when = attempt.sent_at if attempt else (now if sent_at is None else sent_at)
            if attempt is not None:
                self._requests.refuse(attempt.sent_at, 1.0)
                if cost > 0:
                    self._pu.refuse(attempt.sent_at, cost)
            self._retries["429"] += 1
            budget = self._blame(cost, asked, when, now)
            budget.refusals += 1
            if budget is self._requests and self._slow_start():
                self._window = 1.0  # back to one in flight until the rate is learnt
            if budget is self._requests and attempt is not None:
                self._shrink_burst(attempt.tokens)
            if self._adaptive or budget.configured:
                self._learn(budget, cost if budget is self._pu else 1.0, asked, when, now)
            if self._not_before < now + asked:
                self._not_before = now + max(0.0, seconds)
            rpm, pum = self._requests.per_minute, self._pu.per_minute
            log.info("rate limited (%s): the service asked to wait %.3f s; pacing %s requests/min, "
                     "%s PU/min", "processing units" if budget is self._pu else "requests", asked,
                     "-" if rpm is None else f"{rpm:.1f}", "-" if pum is None else f"{pum:.1f}")

    def backoff(self, seconds: float, reason: str, *, key: Any = None) -> None:
        """Sleep ``seconds`` for one request's retry (not shared); count it under ``reason``."""
        key = threading.get_ident() if key is None else key
        with self._lock:
            self._attempts.pop(key, None)
            self._retries[reason] += 1
            self._slept += max(0.0, seconds)
        if seconds > 0:
            time.sleep(seconds)

    def count_retry(self, reason: str, *, slept: float = 0.0) -> None:
        with self._lock:
            self._retries[reason] += 1
            self._slept += max(0.0, slept)

    def handover(self) -> dict[str, Any]:
        """Keyword arguments for a limiter elsewhere (a Dask actor) that goes on from here:
        the configured budgets, the memory, and what was learnt so far."""
        with self._lock:
            learnt = {b.name: b.state() for b in (self._requests, self._pu)
                      if b.source in ("learnt", "remembered")}
            return {"requests_per_minute": self._requests.estimate * 60 if self._requests.configured
                    and self._requests.estimate else None,
                    "pu_per_minute": self._pu.estimate * 60 if self._pu.configured
                    and self._pu.estimate else None,
                    "adaptive": self._adaptive, "memory": self._memory, "learnt": learnt,
                    "request_burst": self._requests.burst, "pu_bucket_seconds": self._pu.bucket_seconds}

    def uncounted(self) -> UncountedLimiter:
        """This limiter for requests no API budget counts (the token endpoint's)."""
        return UncountedLimiter(self)

    def watch(self, session: Any) -> None:
        """Hook ``session`` (requests): each answer ends its attempt, with the PU it cost."""
        session.hooks.setdefault("response", []).append(self._on_response)

    def _on_response(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        if response.status_code != 429:
            spent = None
            with contextlib.suppress(TypeError, ValueError):
                spent = float(response.headers.get(PU_HEADER))
            self.done(spent=spent if spent is not None and math.isfinite(spent) else None)
        return response

    # -- slow start -------------------------------------------------------------------------
    def _slow_start(self) -> bool:
        """Adaptive and no request budget known yet: requests in flight are limited."""
        requests = self._requests
        return self._adaptive and requests.bucket is None and requests.window is None

    def _in_flight_wait(self, now: float, learning: bool) -> float:
        """0 if one more request may be in flight now, else seconds to wait (a short poll).

        While no budget is known, ``self._window`` requests may be in flight (1 at the start,
        one more for each answer while others wait, as TCP's slow start), and one more for
        each ``OPEN_AFTER`` seconds the oldest has been out (slow answers come at a low rate);
        while a first request 429 is being learnt from, only one.
        """
        live = [a.sent_at for a in self._attempts.values() if now - a.sent_at < STALE_ATTEMPT]
        if not live:
            return 0.0
        allowed = 1.0 if learning else self._window + math.floor((now - min(live)) / OPEN_AFTER)
        if len(live) < allowed:
            return 0.0
        self._held = True
        if learning:
            return POLL
        return min(POLL, max(1e-3, min(live) + (len(live) - self._window + 1) * OPEN_AFTER - now))

    # -- learning ---------------------------------------------------------------------------
    def _blame(self, cost: float, wait: float, sent_at: float, now: float) -> _Budget:
        """Which budget refused a request of ``cost`` PU asking to wait ``wait`` seconds."""
        requests, pu = self._requests, self._pu
        if cost <= 0:
            return requests
        if requests.bucket is not None and pu.bucket is not None:
            # both known: the one our own accounting says is (nearer to) spent
            short_r = requests.bucket.wait(1.0, now)
            short_p = pu.bucket.wait(cost, now)
            if abs(short_r - short_p) > 0.05:
                return requests if short_r > short_p else pu
        if pu.bucket is not None and requests.bucket is None:
            # paced by PU and refused anyway: the PU budget is smaller than thought, if the
            # wait is a PU one or the PU this run counts as left were running out
            pu.bucket.refill(now)
            if wait >= PU_WAIT or pu.bucket.level < 2 * cost:
                return pu
            return requests
        n60 = requests.in_window(sent_at) + 1
        p60 = pu.in_window(sent_at) + cost
        oldest = next((t for t, _ in requests.sent if sent_at - t < WINDOW_SECONDS), None)
        window_fit = (oldest is not None and n60 >= MIN_BUDGET and wait >= LONG_WAIT
                      and abs(oldest + WINDOW_SECONDS - (sent_at + wait)) <= 2.0)
        if window_fit:
            return requests
        # a request bucket asks for less than a request interval; a PU bucket for the time
        # its missing PU take to refill, mostly seconds for a request worth spending PU on
        if p60 >= MIN_BUDGET and wait >= PU_WAIT:
            return pu
        return requests

    def _learn(self, budget: _Budget, cost: float, wait: float, sent_at: float, now: float) -> None:
        ready = sent_at + wait
        if budget.bucket is not None:
            budget.bucket.align(cost, wait, now)
        if budget.configured:
            return
        if sent_at < budget.learnt_at:
            # sent before the last lesson: says nothing new, but a first PU lesson counted
            # it as let through, and it was not
            if budget.first_lesson is not None and sent_at < budget.first_lesson[1]:
                rate = self._minute_bucket_rate(budget, *budget.first_lesson[1:])
                if budget.estimate is not None and rate < budget.estimate:
                    budget.pace(rate, now)
                    budget.bucket.align(cost, wait, now)  # type: ignore[union-attr]
                    self._remember()  # the memory must not keep the lesson's overcount
            return
        lesson = None
        if budget is self._requests and wait >= LONG_WAIT and budget.let_through(sent_at) >= MIN_BUDGET:
            # a spent per-minute window: what the last minute surely let through
            budget.window = float(budget.let_through(sent_at))
            lesson = f"a window of {budget.window:.0f} requests a minute"
            budget.learning = False
        elif (budget.ready is not None and sent_at >= budget.ready[0]
              and ready - budget.ready[0] >= MIN_SPAN):
            start, first_cost = budget.ready
            let_through = budget.between(start, sent_at) - first_cost + cost
            if let_through > 0:
                span = ready - start
                rate = let_through / span
                # a short span's rate is coarse (the two ready moments are a few ms off): the
                # first such lesson is paced at the rate itself, rising slowly, until a 429 a
                # long span later measures it (one more 429 for a rate good to a few tenths)
                probe = (span < PRECISE_SPAN and budget is self._requests and budget.span is None)
                budget.pace(rate, now, share=PRECISE_SHARE if span >= PRECISE_SPAN
                            else 1.0 if probe else PACE_SHARE)
                budget.bucket.align(cost, wait, now)  # type: ignore[union-attr]
                budget.probe_from = now if probe else None
                # a lesson of few requests is coarse by a whole request: the rate may be up to
                # (n + 1) / n of it; the probe reaches that bound in PROBE_SECONDS, not at 0.4 %/s
                # (one run in three learnt 200 for 300 a minute and never rose to it)
                budget.probe_cap = max(PROBE_MAX, (let_through + 1.0) / let_through)
                budget.span = max(span, budget.span or 0.0)
                budget.learning = False
                lesson = (f"{rate * 60:.1f} {'PU' if budget is self._pu else 'requests'} a minute"
                          f" (over {span:.1f} s)")
        elif budget.ready is None and budget is self._pu and budget.first is not None \
                and budget.estimate is None:
            # a bucket of one minute's worth, full at the first send (a lower bound)
            budget.first_lesson = (budget.first, sent_at, ready, cost)
            rate = self._minute_bucket_rate(budget, sent_at, ready, cost)
            budget.pace(rate, now)
            budget.bucket.align(cost, wait, now)  # type: ignore[union-attr]
            lesson = f"at least {rate * 60:.1f} PU a minute"
        elif budget is self._requests and budget.bucket is None and not budget.learning:
            budget.learning = True  # one in flight until the next 429 tells the rate
            budget.learnt_at = now
        if lesson is not None or budget.ready is None:
            budget.ready = (ready, cost)
        if lesson is not None:
            self._requests.learning = False  # a budget is known: pace by it, not one by one
            budget.source = "learnt"
            budget.learnt_at = now
            log.info("learnt the service's limit: %s", lesson)
            self._remember()

    def _shrink_burst(self, tokens: float) -> None:
        """A request refused while this bucket held ``tokens`` (2 or more: one to spare
        besides its own) and the service's less than one: the service's burst is smaller by
        about ``tokens``; the next bursts keep to what is left (at least one)."""
        budget = self._requests
        bucket = budget.bucket
        if bucket is None or not tokens >= 2.0:
            return
        bucket.capacity = budget.burst = max(1.0, math.floor(bucket.capacity - tokens + 1e-9))
        bucket.level = min(bucket.level, bucket.top)

    @staticmethod
    def _minute_bucket_rate(budget: _Budget, sent_at: float, ready: float, cost: float) -> float:
        """The refill rate of a bucket of a minute's worth, full at the first send, that
        refused ``cost`` sent at ``sent_at`` until ``ready``: what it let through, plus the
        cost, over a minute plus the time since the first send."""
        first = budget.first if budget.first is not None else sent_at
        return (budget.between(first, sent_at) + cost) / (budget.bucket_seconds + ready - first)

    def _recall(self, entry: dict[str, Any], now: float) -> None:
        for budget in (self._requests, self._pu):
            if budget.configured:
                continue
            known = entry.get(budget.name)
            if not isinstance(known, dict):
                continue
            rate, window, span = known.get("per_second"), known.get("window"), known.get("span")
            if isinstance(rate, (int, float)) and rate > 0:
                precise = isinstance(span, (int, float)) and span >= PRECISE_SPAN
                budget.pace(float(rate), now, share=PRECISE_SHARE if precise else PACE_SHARE)
                budget.span = float(span) if isinstance(span, (int, float)) else None
                budget.source = "remembered"
            if isinstance(window, (int, float)) and window > 0:
                budget.window = float(window)
                budget.source = "remembered"

    def _remember(self) -> None:
        self._remembered_at = time.monotonic()
        if self._memory is None:
            return
        entry = {b.name: b.state() for b in (self._requests, self._pu)
                 if b.source in ("learnt", "remembered") and not b.configured}
        if entry:
            self._memory.save(entry)
