"""Two `dpserve serve` on one host at once: every replica gets its own port and both services work."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.launcher.serve_process import chat, serve_process, wait_workers, workers

pytestmark = pytest.mark.timeout(120)

ARGS = ["--backend", "sim", "--dp-size", "2", "--stagger-s", "0", "--no-echo-replica-logs"]


def test_two_services_share_no_port(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    port_a, port_b = free_port(), free_port()
    with serve_process(ARGS, port_a, tmp_path / "a"), serve_process(ARGS, port_b, tmp_path / "b"):
        wait_workers(port_a, 2)
        wait_workers(port_b, 2)
        urls_a = {str(w["url"]) for w in workers(port_a)}
        urls_b = {str(w["url"]) for w in workers(port_b)}
        assert len(urls_a) == 2 and len(urls_b) == 2 and not urls_a & urls_b
        assert chat(port_a, "a")[0] == 200 and chat(port_b, "b")[0] == 200
