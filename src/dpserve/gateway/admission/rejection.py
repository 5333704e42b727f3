"""Rejection: an admission refusal — an HTTPError that also carries a metrics reason label."""

from __future__ import annotations

from dpserve.errors import HTTPError


class Rejection(HTTPError):
    """Refused at admission. `reason` is the `dpserve_admission_rejected_total` label.

    429s always carry Retry-After (whole seconds) so clients back off for a useful time.
    """

    def __init__(self, status: int, reason: str, message: str, *,
                 retry_after_s: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
        super().__init__(status, message, code=reason, headers=headers)
        self.reason = reason


def too_many(reason: str, message: str, retry_after_s: int) -> Rejection:
    return Rejection(429, reason, f"{message}; retry after {retry_after_s}s",
                     retry_after_s=retry_after_s)
