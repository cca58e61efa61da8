"""A real STAC API server for tests and benchmarks: stac-fastapi-pgstac on a throwaway PostgreSQL.

What :class:`PgStacServer` does, all on 127.0.0.1 and free ports:

1. ``initdb`` + ``pg_ctl start`` a new cluster in a temporary folder (as user ``postgres`` when
   run as root: PostgreSQL refuses to run as root);
2. ``pypgstac migrate`` and switch pgstac's ``context`` setting on (for ``numberMatched``);
3. ``pypgstac load`` the given collections and items;
4. ``uvicorn stac_fastapi.pgstac.app:create_app --factory --host 127.0.0.1``.

stac-fastapi-pgstac and pypgstac pin their own dependencies, so they live in a side virtual
environment (:func:`ensure_venv`, by default ``~/.cache/stacfetch-ci/stac-venv``), never in the
project's. The system needs PostgreSQL and PostGIS (Debian: ``apt-get install postgresql postgis``).

:func:`shared_sentinel2_items` builds the standard test load from ``shared/data``: every real
``sentinel-2-l2a`` item there, with the rasters item's asset hrefs pointed at a local
:class:`~stacfetch.testing.cogserver.CogServer`.

CI infrastructure, not part of the package (it lives with the tests that use it). Command line
(standard library only, so ``.ci/run`` can call it before the project is installed), from the
repository root::

    python3 tests/realstac/pgstac.py prepare        # create/refresh the side venv
    python3 tests/realstac/pgstac.py check          # print what is missing, exit 1 if anything
    python3 tests/realstac/pgstac.py serve          # serve shared/data until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "COLLECTION_ID",
    "REQUIREMENTS",
    "PgStacServer",
    "default_shared_dir",
    "default_venv_dir",
    "ensure_venv",
    "find_pg_bindir",
    "missing_prerequisites",
    "shared_sentinel2_items",
    "venv_ready",
]

#: What the side venv holds (stac-fastapi-pgstac 7.2.0 goes with pgstac 0.10.x).
REQUIREMENTS: tuple[str, ...] = ("stac-fastapi-pgstac[server]==7.2.0", "pypgstac[psycopg]==0.10.0")
COLLECTION_ID = "sentinel-2-l2a"
RASTER_SCENE = "S2A_29RKH_20200219_0_L2A"
#: Raster item assets whose files are in shared/data/rasters (asset key -> file name).
RASTER_ASSETS = {
    "coastal": "B01.tif",
    "blue": "B02.tif",
    "green": "B03.tif",
    "red": "B04.tif",
    "nir": "B08.tif",
    "swir16": "B11.tif",
    "scl": "SCL.tif",
}
_STAMP = "stacfetch-requirements.txt"


# -- locations ------------------------------------------------------------------------------
def default_shared_dir(repo_root: Path | None = None) -> Path:
    """``$STACFETCH_SHARED_DIR``, else ``<repo>/../shared``."""
    env = os.environ.get("STACFETCH_SHARED_DIR")
    if env:
        return Path(env)
    root = repo_root or Path(__file__).resolve().parents[2]
    return (root / ".." / "shared").resolve()


def default_venv_dir() -> Path:
    """``$STACFETCH_STAC_VENV``, else ``${XDG_CACHE_HOME:-~/.cache}/stacfetch-ci/stac-venv``."""
    env = os.environ.get("STACFETCH_STAC_VENV")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "stacfetch-ci" / "stac-venv"


def find_pg_bindir() -> Path | None:
    """PostgreSQL's bin folder: ``$STACFETCH_PG_BINDIR``, Debian's newest, or ``initdb`` on PATH."""
    env = os.environ.get("STACFETCH_PG_BINDIR")
    if env:  # an explicit choice: no fallback
        ok = (Path(env) / "initdb").is_file() and (Path(env) / "pg_ctl").is_file()
        return Path(env) if ok else None
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) if x.isdigit() else x for x in Path(p).parent.name.split(".")],
        reverse=True,
    )
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _has_postgis(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    sharedirs: list[str] = []
    if pg_config.is_file():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True,
                                 timeout=10, check=True)
            sharedirs.append(out.stdout.strip())
    sharedirs.append(f"/usr/share/postgresql/{bindir.parent.name}")
    return any(Path(d, "extension", "postgis.control").is_file() for d in sharedirs)


def missing_prerequisites(shared_dir: Path | None = None) -> list[str]:
    """What the system lacks to run the server (empty list: all there). The venv is not checked."""
    missing: list[str] = []
    bindir = find_pg_bindir()
    if bindir is None:
        missing.append("PostgreSQL server binaries (initdb, pg_ctl) not found")
    elif not _has_postgis(bindir):
        missing.append(f"PostGIS extension not installed for PostgreSQL in {bindir}")
    if os.geteuid() == 0 and not _user_exists("postgres"):
        missing.append("running as root but there is no 'postgres' user to run PostgreSQL as")
    shared = shared_dir or default_shared_dir()
    for rel in ("data/items", f"data/rasters/{RASTER_SCENE}"):
        if not (shared / rel).is_dir():
            missing.append(f"shared test data not found: {shared / rel}")
    return missing


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# -- the side venv --------------------------------------------------------------------------
def _bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def venv_ready(venv: Path | None = None) -> bool:
    """True if the venv exists and was built from exactly :data:`REQUIREMENTS`."""
    venv = venv or default_venv_dir()
    stamp = venv / _STAMP
    return (
        stamp.is_file()
        and stamp.read_text().split() == list(REQUIREMENTS)
        and _bin(venv, "uvicorn").is_file()
        and _bin(venv, "pypgstac").is_file()
    )


def ensure_venv(venv: Path | None = None, *, python: str | None = None, quiet: bool = True) -> Path:
    """Create (or rebuild) the side venv with :data:`REQUIREMENTS`; reuse it when up to date."""
    venv = venv or default_venv_dir()
    if venv_ready(venv):
        return venv
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python or sys.executable, "-m", "venv", str(venv)], check=True)
    cmd = [str(_bin(venv, "python")), "-m", "pip", "install", "--disable-pip-version-check",
           *(["-q"] if quiet else []), *REQUIREMENTS]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"installing the STAC server venv failed ({shlex.join(cmd)}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    (venv / _STAMP).write_text("\n".join(REQUIREMENTS) + "\n")
    return venv


# -- the test data --------------------------------------------------------------------------
def shared_sentinel2_items(
    shared_dir: Path, cog_base_url: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(collections, items)`` for every real ``sentinel-2-l2a`` item in ``shared/data``.

    Earth Search v1 (7) and Planetary Computer (12) items share the collection id
    ``sentinel-2-l2a``; they are loaded under the Earth Search collection document, unchanged
    (pgstac keys items by collection id only). The rasters' item is added with the HTTP(S)
    hrefs of its assets pointed at ``cog_base_url`` (files that are not there answer 404, so
    nothing ever leaves the machine); its ``s3://`` JP2 hrefs are left as they are.
    """
    items_dir = shared_dir / "data" / "items"
    collection = json.loads((items_dir / "collection_earth-search-v1_sentinel-2-l2a.json").read_text())
    items: list[dict[str, Any]] = []
    for name in ("earth-search-v1_sentinel-2-l2a.json", "planetary-computer_sentinel-2-l2a.json"):
        fc = json.loads((items_dir / name).read_text())
        items += [f for f in fc["features"] if f.get("collection") == COLLECTION_ID]
    raster_item = json.loads((shared_dir / "data" / "rasters" / RASTER_SCENE / "item.json").read_text())
    if cog_base_url is not None:
        raster_item = rewrite_asset_hrefs(raster_item, cog_base_url)
    items.append(raster_item)
    ids = [i["id"] for i in items]
    if len(ids) != len(set(ids)):
        raise ValueError("duplicate item ids in shared/data")
    return [collection], items


def rewrite_asset_hrefs(item: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A copy of ``item`` whose http(s) asset hrefs point at ``base_url/<file name>``."""
    out = copy.deepcopy(item)
    base = base_url.rstrip("/")
    for asset in out.get("assets", {}).values():
        href = asset.get("href", "")
        if href.startswith(("http://", "https://")):
            asset["href"] = f"{base}/{href.rsplit('/', 1)[-1]}"
    return out


# -- the server -----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgStacServer:
    """A throwaway pgstac database + stac-fastapi-pgstac API on 127.0.0.1.

    Use as a context manager, or ``start()`` / ``stop()``. ``url`` is the API root,
    ``timings`` the seconds each startup phase took.
    """

    def __init__(
        self,
        collections: Sequence[dict[str, Any]],
        items: Iterable[dict[str, Any]],
        *,
        venv: Path | None = None,
        pg_bindir: Path | None = None,
        workdir: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.collections = list(collections)
        self.items = list(items)
        self.venv = venv or default_venv_dir()
        bindir = pg_bindir or find_pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql postgis)")
        self.pg_bindir = bindir
        self._workdir_given = workdir
        self.startup_timeout = startup_timeout
        self.workdir: Path | None = None
        self.pg_port: int | None = None
        self.api_port: int | None = None
        self.timings: dict[str, float] = {}
        self._api: subprocess.Popen[bytes] | None = None
        self._pg_started = False
        self._as_postgres = os.geteuid() == 0

    # -- public --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The API root, e.g. ``http://127.0.0.1:40123/``."""
        if self.api_port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self.api_port}/"

    @property
    def dsn(self) -> str:
        """The database DSN (user postgres, trust auth, loopback)."""
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgis"

    def start(self) -> PgStacServer:
        """Start PostgreSQL, load the data and start the API; on any error stop what started."""
        if not venv_ready(self.venv):
            raise RuntimeError(f"STAC server venv missing or stale: {self.venv} (run ensure_venv)")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the API and PostgreSQL and remove the temporary folder. Safe to call twice."""
        if self._api is not None:
            if self._api.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._api.pid, signal.SIGTERM)
                try:
                    self._api.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self._api.pid, signal.SIGKILL)
                    self._api.wait(timeout=10)
            self._api = None
        if self._pg_started and self.workdir is not None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._pg(["pg_ctl", "-D", str(self._pgdata), "-m", "fast", "-w", "stop"], timeout=60)
            self._pg_started = False
        if self.workdir is not None and self._workdir_given is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    def __enter__(self) -> PgStacServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, n: int = 40) -> str:
        """The last lines of the PostgreSQL and API logs, for error messages."""
        if self.workdir is None:
            return ""
        parts = []
        for name in ("pg/server.log", "api.log"):
            p = self.workdir / name
            if p.is_file():
                lines = p.read_text(errors="replace").splitlines()[-n:]
                parts.append(f"--- {name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- internals -----------------------------------------------------------------------
    @property
    def _pgdata(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "pg" / "data"

    def _pg(self, argv: list[str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL binary, as user postgres when we are root."""
        cmd = [str(self.pg_bindir / argv[0]), *argv[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd] if shutil.which("runuser") else [
                "su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd="/")
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}\n{self.log_tail()}")
        return proc

    def _run(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, cwd=self.workdir)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")

    def _sql(self, database: str, sql: str) -> None:
        self._pg(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.pg_port),
                  "-U", "postgres", "-d", database, "-c", sql])

    def _start(self) -> None:
        t0 = time.perf_counter()
        if self._workdir_given is not None:
            self.workdir = Path(self._workdir_given)
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="stacfetch-pgstac-"))
        self.workdir.chmod(0o755)  # user postgres must reach pg/
        pgdir = self.workdir / "pg"
        pgdir.mkdir()
        if self._as_postgres:
            shutil.chown(pgdir, "postgres", "postgres")

        t = time.perf_counter()
        self._pg(["initdb", "-D", str(self._pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync"])
        for attempt in range(3):
            self.pg_port = _free_port()
            opts = (f"-p {self.pg_port} -c listen_addresses=127.0.0.1 -k {pgdir} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            try:
                self._pg(["pg_ctl", "-D", str(self._pgdata), "-l", str(pgdir / "server.log"),
                          "-o", opts, "-w", "-t", "60", "start"])
                self._pg_started = True
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self.timings["postgres"] = time.perf_counter() - t

        t = time.perf_counter()
        self._sql("postgres", "create database postgis")
        pypgstac = str(_bin(self.venv, "pypgstac"))
        self._run([pypgstac, "migrate", "--dsn", self.dsn])
        self._sql("postgis", "insert into pgstac.pgstac_settings(name, value) values ('context', 'on') "
                             "on conflict (name) do update set value = excluded.value")
        self.timings["migrate"] = time.perf_counter() - t

        t = time.perf_counter()
        coll_file = self.workdir / "collections.ndjson"
        coll_file.write_text("".join(json.dumps(c) + "\n" for c in self.collections))
        items_file = self.workdir / "items.ndjson"
        items_file.write_text("".join(json.dumps(i) + "\n" for i in self.items))
        self._run([pypgstac, "load", "collections", str(coll_file), "--dsn", self.dsn, "--method", "upsert"])
        if self.items:
            self._run([pypgstac, "load", "items", str(items_file), "--dsn", self.dsn, "--method", "upsert"])
        self.timings["load"] = time.perf_counter() - t

        t = time.perf_counter()
        self._start_api()
        self.timings["api"] = time.perf_counter() - t
        self.timings["total"] = time.perf_counter() - t0

    def _start_api(self) -> None:
        assert self.workdir is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES_"))}
        env.update(PGUSER="postgres", PGPASSWORD="unused", PGHOST="127.0.0.1",
                   PGPORT=str(self.pg_port), PGDATABASE="postgis")
        for attempt in range(3):
            self.api_port = _free_port()
            log = (self.workdir / "api.log").open("ab")
            self._api = subprocess.Popen(
                [str(_bin(self.venv, "uvicorn")), "stac_fastapi.pgstac.app:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(self.api_port), "--log-level", "warning"],
                env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
            log.close()
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and self._api.poll() is None:
                try:
                    with urllib.request.urlopen(f"{self.url}_mgmt/ping", timeout=2) as r:
                        if r.status == 200:
                            return
                except OSError:
                    time.sleep(0.1)
            if self._api.poll() is None:
                raise RuntimeError(f"STAC API did not answer within {self.startup_timeout}s\n"
                                   f"{self.log_tail()}")
            self._api = None
            if attempt == 2:
                raise RuntimeError(f"STAC API exited at startup\n{self.log_tail()}")


# -- command line ---------------------------------------------------------------------------
def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 tests/realstac/pgstac.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["prepare", "check", "serve"])
    parser.add_argument("--shared", type=Path, default=None, help="shared/ folder (default: ../shared)")
    parser.add_argument("--venv", type=Path, default=None, help="side venv (default: %(default)s)")
    args = parser.parse_args(argv)
    venv = args.venv or default_venv_dir()
    shared = args.shared or default_shared_dir()
    if args.command == "prepare":
        t = time.perf_counter()
        reused = venv_ready(venv)
        ensure_venv(venv)
        print(f"STAC server venv {'reused' if reused else 'created'}: {venv} "
              f"({time.perf_counter() - t:.1f}s)")
        return 0
    missing = missing_prerequisites(shared)
    if not venv_ready(venv):
        missing.append(f"STAC server venv missing or stale: {venv}")
    if args.command == "check":
        for m in missing:
            print(f"missing: {m}")
        return 1 if missing else 0
    if missing:
        print("cannot serve:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    # the project (and its dependencies) is needed only to serve, not to prepare the venv
    from stacfetch.testing.cogserver import CogServer

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # stop cleanly on kill, too
    with CogServer(shared / "data" / "rasters" / RASTER_SCENE) as cogs:
        collections, items = shared_sentinel2_items(shared, cogs.url)
        with PgStacServer(collections, items, venv=venv) as server:
            print(f"STAC API: {server.url}  ({len(items)} items)\nCOGs:     {cogs.url}/\n"
                  f"startup:  " + ", ".join(f"{k} {v:.2f}s" for k, v in server.timings.items()))
            print("Ctrl-C to stop", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
