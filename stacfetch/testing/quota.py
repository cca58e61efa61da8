"""The account behind the emulator: monthly quotas and what it has been charged.

CDSE's free tier has 10 000 requests and 10 000 PU per month for the Sentinel Hub APIs, reset on
the 1st of every month (CDSE ``Quotas.qmd``); a request made when a monthly quota is used up is
refused with **403** (reference §4.1, from a third-party summary; the exact body is not
published). The emulator answers in the service's error shape with the words of Sentinel Hub's
"monthly limits" notice, and — like the service — does not say when the quota comes back::

    emu.account.monthly_pu = 2.0       # refuse Process requests once 2 PU are spent
    emu.account.pu_spent               # what x-processingunits-spent added up to

Processing units are deducted only for successful (2xx) requests.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .responses import ApiError, sh_error

QUOTA_CODE = "COMMON_INSUFFICIENT_PERMISSIONS"


@dataclass
class Account:
    """Monthly quotas (None: unlimited) and this month's usage; thread-safe."""

    monthly_pu: float | None = None
    monthly_requests: int | None = None
    pu_spent: float = 0.0
    requests: int = 0
    charges: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def admit(self, kind: str) -> None:
        """Count one catalog/process request; raise the 403 when a monthly quota is used up."""
        with self._lock:
            if self.monthly_requests is not None and self.requests >= self.monthly_requests:
                raise quota_exhausted(f"requests used {self.requests} of {self.monthly_requests} per month")
            if kind == "process" and self.monthly_pu is not None and self.pu_spent >= self.monthly_pu:
                raise quota_exhausted(
                    f"processing units used {self.pu_spent:.3f} of {self.monthly_pu:g} per month")
            self.requests += 1

    def charge(self, pu: float) -> None:
        with self._lock:
            self.pu_spent += pu
            self.charges.append(pu)

    def reset(self) -> None:
        """A new month: usage back to zero."""
        with self._lock:
            self.pu_spent, self.requests = 0.0, 0
            self.charges.clear()


def quota_exhausted(detail: str) -> ApiError:
    return sh_error(
        403,
        "Your account has reached the monthly limits and access to services has been restricted "
        f"({detail}).",
        QUOTA_CODE,
    )
