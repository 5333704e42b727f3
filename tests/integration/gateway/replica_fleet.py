"""Real replica processes (`dpserve sim`, `dpserve engine`) for gateway scenarios: started together,
signalled one by one (SIGKILL, SIGSTOP), always stopped — a stopped one is continued first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dpserve.http_names import HEALTH_PATH
from tests.conftest import free_port
from tests.support import stop_process, wait_http_ok


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    url: str

    def signal(self, sig: signal.Signals) -> None:
        os.killpg(self.proc.pid, sig)


@contextmanager
def replica_fleet(n: int, command: str, args: Sequence[str], log_dir: Path,
                  timeout_s: float = 120.0) -> Iterator[list[Replica]]:
    """`n` × `python -m dpserve COMMAND --port P ARGS`, each in its own process group, all ready."""
    replicas: list[Replica] = []
    logs = []
    try:
        for i in range(n):
            port = free_port()
            log = open(log_dir / f"{command}{i}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            proc = subprocess.Popen([sys.executable, "-m", "dpserve", command, "--port", str(port), *args],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            replicas.append(Replica(proc, f"http://127.0.0.1:{port}"))
        for r in replicas:  # they start side by side; each wait is mostly the slowest's
            wait_http_ok(r.url + HEALTH_PATH, timeout_s, r.proc)
        yield replicas
    finally:
        for r in replicas:
            if r.proc.poll() is None:
                r.signal(signal.SIGCONT)  # a SIGSTOPped replica cannot act on SIGTERM
            stop_process(r.proc)
        for log in logs:
            log.close()
