"""Helpers shared by test modules: ``from helpers import run_stacfetch`` (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from stacfetch.config import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

REPO = Path(__file__).resolve().parents[1]


class Service(Protocol):
    """A loopback Sentinel Hub: the emulator, a replay server, a hostile front."""

    @property
    def url(self) -> str: ...

    @property
    def token_url(self) -> str: ...


def run_stacfetch(args: Sequence[str], service: Service, cwd: Path, *,
                  timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m stacfetch ARGS`` in ``cwd`` as a user runs it, against ``service``.

    The environment loses every ``SH_*``/``STACFETCH_*`` variable, then gets the service's URLs,
    the sandbox credentials and ``STACFETCH_OUTPUT_DIR=<cwd>/out``.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SH_", "STACFETCH_"))}
    environ.update(PYTHONPATH=str(REPO), SH_BASE_URL=service.url, SH_TOKEN_URL=service.token_url,
                   SH_CLIENT_ID=SANDBOX_CLIENT_ID, SH_CLIENT_SECRET=SANDBOX_CLIENT_SECRET,
                   STACFETCH_OUTPUT_DIR=str(cwd / "out"))
    return subprocess.run([sys.executable, "-m", "stacfetch", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)
