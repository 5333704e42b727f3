"""TopConfig: the flags of `dpserve top`."""

from __future__ import annotations

from dataclasses import dataclass

from dpserve.config import DEFAULT_GATEWAY_PORT, DEFAULT_HOST, option, require
from dpserve.top.rows import SORT_KEYS

ADMIN_KEY_ENV = "DPSERVE_ADMIN_KEY"


@dataclass(frozen=True)
class TopConfig:
    """Where the gateway is, how often to refresh, and how to sort."""

    url: str = option(f"http://{DEFAULT_HOST}:{DEFAULT_GATEWAY_PORT}", "the gateway's base URL")
    admin_key: str | None = option(
        None, f"the gateway's admin key, if it has one (default: ${ADMIN_KEY_ENV}; the environment keeps "
              "it out of `ps`)", metavar="KEY")
    interval_s: float = option(1.0, "seconds between refreshes (the gateway samples once a second)")
    sort: str = option("name", "sort the replicas by this column (keys switch it while running)",
                       choices=SORT_KEYS)
    reverse: bool = option(False, "sort in descending order (the `o` key flips it while running)")
    once: bool = option(False, "print the table once and exit (also what happens when stdout is not a "
                               "terminal)")
    timeout_s: float = option(2.0, "limit for one request to the gateway, seconds")

    def __post_init__(self) -> None:
        require(self.url.startswith(("http://", "https://")), "--url must start with http:// or https://")
        require(0.1 <= self.interval_s <= 3600, "--interval-s must be 0.1 .. 3600")
        require(0 < self.timeout_s <= 60, "--timeout-s must be > 0 and <= 60")
