"""Running a download on a Dask cluster (``stacfetch.get(..., executor=client)``).

``executor`` may be a ``distributed.Client`` or its ``client.get_executor()``. The run then
keeps **one budget and one token** for all worker processes:

* a :class:`LimiterActor` (a Dask actor on one worker) holds the run's one
  :class:`~stacfetch.http.ratelimit.RateLimiter`; each worker's session paces through a
  :class:`RemoteLimiter` that asks it before every request (a few ms a request);
* the token is fetched once, on the client, and handed out by the actor
  (:class:`RemoteToken`); the client refreshes it there before it expires or after a 401 —
  the client secret never leaves the client;
* each worker process opens one session for the run (:class:`RunPlugin`, a Dask worker
  plugin, removed at the end of the run), shared by its threads;
* jobs run as tasks; progress, the result and the manifest stay on the client.

Imported only when such an executor is passed (``distributed`` is an optional extra).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from distributed import Client, WorkerPlugin, get_worker

from .errors import ServiceError, TokenExpiredError
from .http.ratelimit import PU_HEADER, RateLimiter, current_cost
from .http.retry import RetryPolicy
from .http.session import ServiceSession
from .http.tokens import BearerAuth, deployment_hint

log = logging.getLogger(__name__)

TOKEN_CACHE_SECONDS = 10.0  # a worker asks the actor for the token at most this often
REFRESH_POLL_SECONDS = 0.5  # how often the client checks whether the token needs refreshing
REFRESH_BEFORE_EXPIRY = 120.0


def client_of(executor: Any) -> Client | None:
    """The ``distributed.Client`` behind ``executor`` (a Client or its executor), or None."""
    if isinstance(executor, Client):
        return executor
    client = getattr(executor, "_client", None)
    return client if isinstance(client, Client) else None


class LimiterActor:
    """The run's one limiter and current token, on one worker; every call is short."""

    def __init__(self, limits: dict[str, Any], token: str | None) -> None:
        self._limiter = RateLimiter(**limits)
        self._token = token
        self._stale: str | None = None

    def reserve(self, cost: float, key: str) -> float:
        return self._limiter.reserve(cost, key=key)

    def done(self, key: str, spent: float | None) -> None:
        self._limiter.done(key=key, spent=spent)

    def pause(self, seconds: float, asked: float | None, key: str) -> None:
        self._limiter.pause(seconds, asked=asked, key=key)

    def count(self, reason: str, seconds: float, key: str | None) -> None:
        """A retry for ``reason``; with ``key``, that attempt is over (the caller sleeps)."""
        if key is not None:
            self._limiter.done(key=key)
        self._limiter.count_retry(reason, slept=seconds)

    def stats(self) -> dict[str, Any]:
        s = self._limiter.stats()
        return {"requests": s.requests, "retries": s.retries, "slept_seconds": s.slept_seconds,
                "requests_per_minute": s.requests_per_minute, "pu_per_minute": s.pu_per_minute}

    def token(self) -> str | None:
        return self._token

    def set_token(self, token: str) -> None:
        self._token, self._stale = token, None

    def invalidate(self, token: str) -> None:
        if token == self._token:
            self._stale = token

    def stale(self) -> str | None:
        return self._stale


def _key() -> str:
    return f"{os.getpid()}:{threading.get_ident()}"


class RemoteLimiter:
    """A worker's face of the :class:`LimiterActor`: the limiter interface the session uses."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def acquire(self) -> float:
        cost, key, waited = current_cost(), _key(), 0.0
        while True:
            wait = self._actor.reserve(cost, key).result()
            if wait <= 0.0:
                return waited
            time.sleep(wait)
            waited += wait

    def pause(self, seconds: float, *, sent_at: float | None = None, asked: float | None = None) -> None:
        self._actor.pause(seconds, asked, _key()).result()

    def backoff(self, seconds: float, reason: str) -> None:
        self._actor.count(reason, seconds, _key()).result()
        if seconds > 0:
            time.sleep(seconds)

    def count_retry(self, reason: str) -> None:
        self._actor.count(reason, 0.0, None).result()

    def watch(self, session: Any) -> Any:
        """Hook ``session``: each answer ends its attempt here; returns the hook."""
        session.hooks.setdefault("response", []).append(self._on_response)
        return self._on_response

    def _on_response(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        if response.status_code != 429:
            spent = None
            with contextlib.suppress(TypeError, ValueError):
                spent = float(response.headers.get(PU_HEADER))
            self._actor.done(_key(), spent).result()
        return response


class RemoteToken:
    """The run's token as the actor hands it out; a 401 asks the client for a fresh one."""

    def __init__(self, actor: Any, settings: Any, can_refresh: bool) -> None:
        self._actor = actor
        self._settings = settings
        self.can_refresh = can_refresh
        self.fetches = 0
        self._lock = threading.Lock()
        self._token: str | None = None
        self._fetched = 0.0

    def get(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() - self._fetched > TOKEN_CACHE_SECONDS:
                self._token = self._actor.token().result()
                self._fetched = time.monotonic()
            if self._token is None:
                raise TokenExpiredError("the run's token is not available on this worker",
                                        hint="run the download again")
            return self._token

    def invalidate(self, token: str) -> None:
        """After a 401: wait (30 s at most) for the client to put a fresh token in place."""
        self._actor.invalidate(token).result()
        deadline = time.monotonic() + 30.0
        with self._lock:
            while time.monotonic() < deadline:
                fresh = self._actor.token().result()
                if fresh != token:
                    self._token, self._fetched = fresh, time.monotonic()
                    return
                time.sleep(0.2)
            self._token = None

    def refused(self, response: Any) -> Exception:
        base = ServiceError.from_response(response)
        return TokenExpiredError(f"the run's token was refused ({base.message})",
                                 hint=deployment_hint(self._settings))


class RunPlugin(WorkerPlugin):
    """Per worker process: one session for the run (opened on first use, closed at the end)."""

    def __init__(self, name: str, settings: Any, actor: Any, can_refresh: bool,
                 retry: RetryPolicy, pool_size: int) -> None:
        self.name = name
        self._settings = settings
        self._actor = actor
        self._can_refresh = can_refresh
        self._retry = retry
        self._pool_size = pool_size
        self._session: ServiceSession | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def session(self) -> ServiceSession:
        with self._lock:
            if self._session is None:
                limiter = RemoteLimiter(self._actor)
                token = RemoteToken(self._actor, self._settings, self._can_refresh)
                urls = [self._settings.base_url, self._settings.token_url]
                session = ServiceSession(self._settings, limiter=limiter, retry=self._retry,  # type: ignore[arg-type]
                                         token_source=token, auth=BearerAuth(token, urls),  # type: ignore[arg-type]
                                         pool_size=self._pool_size)
                self._session = session
            return self._session

    def teardown(self, worker: Any) -> None:
        if self._session is not None:
            self._session.close()


class RemoteRun:
    """What a task needs to find its worker's session: the plugin's name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def session(self) -> ServiceSession:
        return get_worker().plugins[self.name].session()  # type: ignore[attr-defined]


@contextlib.contextmanager
def on_cluster(client: Client, context: Any) -> Iterator[tuple[Executor, Any, dict[str, Any]]]:
    """Set the run up on ``client``'s cluster; yields (executor, the tasks' context, stats).

    ``stats`` is filled with the shared limiter's counters when the block ends.
    """
    local = context.session()  # the client's session: its token and its limiter's lessons
    source = getattr(local, "token_source", None)
    token = source.get() if source is not None else None
    limits = local.limiter.handover() if hasattr(local.limiter, "handover") else {}
    name = f"stacfetch-run-{uuid.uuid4().hex[:12]}"
    future = client.submit(LimiterActor, limits, token, actor=True, pure=False)
    actor = future.result()
    shipped = replace(context.settings, client_secret=None, access_token=token)
    plugin = RunPlugin(name, shipped, actor, bool(getattr(source, "can_refresh", False)),
                       local.retry_policy, pool_size=4)
    client.register_plugin(plugin, name=name)
    remote = context.for_workers(RemoteRun(name))
    # the client's own requests during the run count against the shared budget too
    previous, shared = local.limiter, RemoteLimiter(actor)
    local.limiter = shared
    hook = shared.watch(local)
    stats: dict[str, Any] = {}
    stop = threading.Event()
    refresher = threading.Thread(target=_keep_token_fresh, args=(actor, source, stop),
                                 name="stacfetch-token", daemon=True)
    refresher.start()
    try:
        yield client.get_executor(pure=False), remote, stats
    finally:
        local.limiter = previous
        with contextlib.suppress(ValueError):
            local.hooks["response"].remove(hook)
        stop.set()
        refresher.join(timeout=5)
        with contextlib.suppress(Exception):
            stats.update(actor.stats().result())
            stats["token_fetches"] = getattr(source, "fetches", 0)
        with contextlib.suppress(Exception):
            client.unregister_worker_plugin(name)
        with contextlib.suppress(Exception):
            client.cancel(future)


def _keep_token_fresh(actor: Any, source: Any, stop: threading.Event) -> None:
    """On the client: replace the actor's token before it expires or after a worker's 401."""
    if source is None or not getattr(source, "can_refresh", False):
        return
    while not stop.wait(REFRESH_POLL_SECONDS):
        try:
            stale = actor.stale().result()
            remaining = getattr(source, "expires_in", None)
            if stale is not None:
                source.invalidate(stale)
            elif remaining is None or remaining > REFRESH_BEFORE_EXPIRY:
                continue
            actor.set_token(source.get()).result()
        except Exception as exc:  # a refresh that fails shows as the workers' 401s
            log.debug("could not refresh the run's token: %s", exc)
