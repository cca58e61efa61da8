"""What a run produced: one ``Outcome`` per acquisition and the ``GetResult`` of ``get()``.

Plain data with views for people: ``summary()`` for a terminal, ``to_dict()`` for ``--json``,
``__repr__``/``_repr_html_`` for a notebook, ``to_xarray()`` and ``contact_sheet()`` for a look.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EXIT_NOTHING_WRITTEN, EXIT_OK, EXIT_PARTIAL, InvalidOptionError
from .http import redact
from .plan import Job, Plan
from .preview import contact_sheet

__all__ = ["GetResult", "Outcome"]


@dataclass
class Outcome:
    """What happened to one job."""

    job: Job
    status: str  # "written" | "skipped" | "failed"
    bytes: int = 0
    requests: int = 0
    error: str | None = None
    sha256: str | None = None  # of the file written (hashed by the worker, not the manifest)
    identity: tuple[int, int, int] | None = None  # of that file (files.file_identity), under its lock


@dataclass
class GetResult:
    """The result of ``stacfetch.get``: files written, skipped and failed acquisitions."""

    jobs: list[Job] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    manifest: Path | None = None
    dry_run: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    min_clear: float | None = None
    screened: list[Any] = field(default_factory=list)  # clouds.ClearShare of each screened job
    previews: list[Path] = field(default_factory=list)

    @property
    def cloudy(self) -> list[Any]:
        """Screened acquisitions skipped because too little of the area was clear (--min-clear)."""
        if self.min_clear is None:
            return []
        return [s for s in self.screened if not s.keep(self.min_clear)]

    @property
    def written(self) -> list[Path]:
        """Files downloaded by this run."""
        return [o.job.destination for o in self.outcomes if o.status == "written"]

    @property
    def skipped(self) -> list[Path]:
        """Files found complete and left alone."""
        return [o.job.destination for o in self.outcomes if o.status == "skipped"]

    @property
    def failed(self) -> list[Outcome]:
        """Outcomes of the acquisitions that failed (their ``error`` says why)."""
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def paths(self) -> list[Path]:
        """Every complete file of this run, written now or found complete, in time order."""
        done = {o.job.destination for o in self.outcomes if o.status in ("written", "skipped")}
        return [j.destination for j in self.jobs if j.destination in done]

    @property
    def bytes(self) -> int:
        """Bytes downloaded by this run."""
        return sum(o.bytes for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0; 5 when some acquisitions failed and others are complete; 6 when none is."""
        if not self.failed:
            return EXIT_OK
        return EXIT_PARTIAL if self.paths else EXIT_NOTHING_WRITTEN

    def summary(self) -> str:
        """The run in a few lines for people: counts, cloudy skips, manifest, ``FAILED`` lines."""
        if self.dry_run:
            return "dry run: nothing downloaded"
        lines = [
            f"{len(self.written)} downloaded, {len(self.skipped)} skipped (already complete), "
            f"{len(self.failed)} failed; {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s"
        ]
        if self.cloudy:
            lines.append(f"{len(self.cloudy)} skipped as cloudy over the area (less than "
                         f"{self.min_clear:g} % clear):")
            lines.extend(f"  {s.describe()}" for s in self.cloudy)
        if self.previews:
            lines.append(f"{len(self.previews)} quicklook PNG(s) next to the GeoTIFFs")
        if self.manifest:
            lines.append(f"manifest: {self.manifest}")
        for o in self.failed:
            lines.append(f"FAILED {o.job.acquisition.key}: {redact(o.error or '')}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready data (``--json``): the plan of a dry run, written, skipped, failed."""
        plan = {"plan": Plan(tuple(self.jobs)).summary()} if self.dry_run else {}
        return {
            "dry_run": self.dry_run,
            **plan,
            "written": [str(p) for p in self.written],
            "skipped": [str(p) for p in self.skipped],
            "failed": [
                {"acquisition": o.job.acquisition.key, "destination": str(o.job.destination),
                 "error": redact(o.error or "")}
                for o in self.failed
            ],
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "manifest": str(self.manifest) if self.manifest else None,
            "cloudy": [
                {"acquisition": c.key, "clear_percent": None if c.clear is None else round(c.clear, 2)}
                for c in self.cloudy
            ],
            "previews": [str(p) for p in self.previews],
            "stats": self.stats,
        }

    # -- in a notebook ----------------------------------------------------------------------
    @property
    def folder(self) -> Path | None:
        """The area folder of this run's files (None without jobs)."""
        return self.jobs[0].area_dir if self.jobs else None

    def rows(self) -> list[dict[str, Any]]:
        """One row per acquisition: time, platform, status, scene cloud %, area clear % (when screened)."""
        words = {"written": "downloaded", "skipped": "already complete", "failed": "failed"}
        status = {o.job.destination: words.get(o.status, o.status) for o in self.outcomes}
        shares = {s.job.destination: s for s in self.screened}
        cloudy = [s.job for s in self.cloudy if s.job.destination not in status]
        rows = []
        for job in sorted([*self.jobs, *cloudy], key=lambda j: j.acquisition.datetime):
            share = shares.get(job.destination)
            state = status.get(job.destination) or ("planned" if self.dry_run else
                                                    "skipped: cloudy" if job in cloudy else "not run")
            rows.append({"time": job.acquisition.datetime, "platform": job.acquisition.platform,
                         "status": state, "cloud_cover": job.acquisition.cloud_cover,
                         "clear_percent": None if share is None else share.clear,
                         "file": job.destination.name})
        return rows

    def __repr__(self) -> str:
        where = f", folder {self.folder}" if self.folder else ""
        if self.dry_run:
            return f"GetResult(dry run: {len(self.jobs)} acquisition(s) planned{where})"
        cloudy = f", {len(self.cloudy)} skipped as cloudy" if self.cloudy else ""
        return (f"GetResult({len(self.written)} downloaded, {len(self.skipped)} already complete, "
                f"{len(self.failed)} failed{cloudy}; {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s{where})")

    def _repr_html_(self) -> str:
        def cell(value: Any, fmt: str = "{}") -> str:
            return "" if value is None else html.escape(fmt.format(value))

        body = "".join(
            f"<tr><td>{cell(r['time'], '{:%Y-%m-%d %H:%M:%S}')}</td><td>{cell(r['platform'])}</td>"
            f"<td>{cell(r['status'])}</td><td style='text-align:right'>{cell(r['cloud_cover'], '{:.1f}')}</td>"
            f"<td style='text-align:right'>{cell(r['clear_percent'], '{:.0f}')}</td>"
            f"<td><code>{cell(r['file'])}</code></td></tr>" for r in self.rows())
        head = "".join(f"<th>{h}</th>" for h in ("acquired (UTC)", "platform", "status",
                                                  "scene cloud %", "area clear %", "file"))
        lines = "<br>".join(html.escape(line) for line in self.summary().splitlines()[:1])
        where = f"<br>folder: <code>{html.escape(str(self.folder))}</code>" if self.folder else ""
        return (f"<div><b>stacfetch GetResult</b>: {lines}{where}"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")

    def to_xarray(self, **options: Any) -> Any:
        """The files as one lazy ``xarray.Dataset`` (``stacfetch.open_dataset``; the xarray extra)."""
        # here: stacfetch.dataset loads xarray and dask, which a download does not need
        from .dataset import open_dataset

        return open_dataset(self, **options)

    def contact_sheet(self, **options: Any) -> Any:
        """Draw this run's area as one contact sheet PNG; a notebook shows it inline (``PngPath``)."""
        if self.folder is None or not self.paths:
            raise InvalidOptionError("this run has no files to draw", hint="see result.summary()")
        return contact_sheet(self.folder, **options)[0]
