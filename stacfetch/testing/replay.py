"""Replay recorded Catalog documents of the real service on 127.0.0.1.

The real landing pages, items and search pages in ``reference/real-responses/`` (see its
``SOURCES.md``) are served unchanged except for their host names, which are rewritten at serve
time to the loopback origin. Endpoints:

* ``POST /auth/realms/<realm>/protocol/openid-connect/token`` — any client credentials get a
  bearer token (the replay checks nothing else about it);
* ``GET <any>/`` under ``/api/v1/catalog`` — the landing page (1.0.0 or 0.9.0 paths);
* ``GET <any>/conformance`` — the landing page's ``conformsTo`` (empty for 0.9.0);
* ``GET|POST <any>/search`` (also the new commercial ``/catalog/v1/search``) — the recorded page; a request carrying ``next`` (body or query)
  gets the following recorded page, or an empty last page.

A bare feature list (a ``fields``-filtered capture) or a single item is put in a minimal
``FeatureCollection`` envelope at serve time; say so when you report on it. Example::

    with ReplayServer(load("landing_sh_v100.json"), [load("page_sh_openapi_post_next.json")]) as rs:
        settings = ...(base_url=rs.url, token_url=rs.token_url)
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .loopback import LoopbackServer, QuietHandler

__all__ = ["REAL_HOSTS", "ReplayServer", "as_page", "load", "real_responses_dir"]

REAL_HOSTS = ("https://services.sentinel-hub.com", "https://sh.dataspace.copernicus.eu",
              "https://creodias.sentinel-hub.com", "https://services-uswest2.sentinel-hub.com")
TOKEN = "replayed-token"


def real_responses_dir(shared: str | Path | None = None) -> Path:
    """``<shared>/reference/real-responses`` (``STACFETCH_SHARED_DIR``, else ``../shared``)."""
    root = Path(shared or os.environ.get("STACFETCH_SHARED_DIR") or Path.cwd().parent / "shared")
    return root / "reference" / "real-responses"


def load(name: str, shared: str | Path | None = None) -> Any:
    return json.loads((real_responses_dir(shared) / name).read_text())


def as_page(doc: Any) -> dict[str, Any]:
    """A search page for ``doc``: a FeatureCollection as is; a feature list or one item wrapped."""
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        return doc
    features = doc if isinstance(doc, list) else [doc]
    return {"type": "FeatureCollection", "features": features, "links": [],
            "context": {"limit": max(len(features), 1), "returned": len(features)}}


class _Handler(QuietHandler):
    server_version = "stacfetch-replay/1"

    def _answer(self, status: int, doc: Any, content_type: str = "application/json") -> None:
        text = json.dumps(doc)
        origin = self.server.url
        for host in REAL_HOSTS:
            text = text.replace(host, origin)
        self.send_body(status, text.encode(), content_type)

    def _handle(self) -> None:
        srv: ReplayServer = self.server.owner
        split = urlsplit(self.path)
        raw = self.read_body()
        srv.requests.append((self.command, split.path, raw.decode("utf-8", "replace")))
        path = split.path
        if path.endswith("/openid-connect/token"):
            self._answer(200, {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"})
            return
        if path.endswith("/search"):  # /api/v1/catalog[/1.0.0]/search, or /catalog/v1/search
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            follow = "next" in parse_qs(split.query) or (isinstance(body, dict) and "next" in body)
            self._answer(200, srv.page(follow), "application/geo+json")
        elif not path.startswith("/api/v1/catalog"):
            self._answer(404, {"code": 404, "description": f"No such endpoint: {path}"})
        elif path.endswith("/conformance"):
            self._answer(200, {"conformsTo": srv.landing.get("conformsTo", [])})
        elif path.endswith("/"):
            self._answer(200, srv.landing)
        else:
            self._answer(404, {"code": 404, "description": "Not found."})

    do_GET = do_POST = _handle  # noqa: N815


class ReplayServer(LoopbackServer):
    """Serves one landing page and a sequence of search pages; a context manager."""

    what = "the replay server"

    def __init__(self, landing: dict[str, Any], pages: Sequence[Any], *, realm: str = "main") -> None:
        super().__init__(_Handler)
        self.landing = landing
        self.pages = [as_page(p) for p in pages]
        self.realm = realm
        self.requests: list[tuple[str, str, str]] = []
        self._served = 0
        self._lock = threading.Lock()

    def page(self, follow: bool) -> dict[str, Any]:
        with self._lock:
            index = self._served if follow else 0
            self._served = index + 1
        if index < len(self.pages):
            return self.pages[index]
        return {"type": "FeatureCollection", "features": [], "links": [],
                "context": {"limit": 1, "returned": 0}}

    @property
    def token_url(self) -> str:
        return f"{self.url}/auth/realms/{self.realm}/protocol/openid-connect/token"
