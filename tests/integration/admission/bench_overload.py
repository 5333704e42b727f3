"""Admission under 3× overload: offered load, admitted TTFT p50/p99, rejects and their latency.

Runs the fleet of `overload.py` (2 sims of 4 slots, 24 retrying clients) once per router set-up
and prints one table row each:

    flock /tmp/dpserve-bench.lock .venv/bin/python -m tests.integration.admission.bench_overload 30
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from .overload import SLOTS_PER_REPLICA, drive, overloaded_fleet

SLO_MS = 2000.0
SETUPS = {
    "no admission": [],
    f"--ttft-slo-ms {SLO_MS:g}": ["--ttft-slo-ms", str(SLO_MS)],
    f"--ttft-slo-ms {SLO_MS:g} --max-inflight-per-worker {SLOTS_PER_REPLICA}":
        ["--ttft-slo-ms", str(SLO_MS), "--max-inflight-per-worker", str(SLOTS_PER_REPLICA)],
}


def main() -> None:
    duration_s = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    cols = ["offered_per_s", "admitted", "ttft_p50_ms", "ttft_p99_ms", "ttft_max_ms", "over_slo",
            "rejected", "reject_p50_ms", "reject_p99_ms"]
    print("| router flags | " + " | ".join(cols) + " |\n|" + " --- |" * (len(cols) + 1))
    for name, flags in SETUPS.items():
        with tempfile.TemporaryDirectory() as tmp, overloaded_fleet(flags, Path(tmp)) as url:
            summary = asyncio.run(drive(url, duration_s)).summary(SLO_MS / 1000)
        print(f"| {name} | " + " | ".join(f"{summary[c]:.0f}" if c != "offered_per_s" else f"{summary[c]:.1f}"
                                         for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
