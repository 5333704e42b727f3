"""The live dashboard end to end: `dpserve router` in front of 3 `dpserve sim` processes under load,
`dpserve top` in a pseudo-terminal, and the page in Debian's headless Chromium driven by Playwright
(one row per replica, numbers that move, a killed replica down within 2 s, a clean console).

Chromium comes from `scripts/ensure-test-services.sh` (apt, as root); Playwright never downloads a
browser here. DPSERVE_UPDATE_SCREENSHOT=1 also writes docs/img/dashboard.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support import dpserve_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM = "/usr/bin/chromium"
# This machine's closed network: no background fetches, no QUIC, no GPU, a fresh profile.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).parents[2] / "docs" / "img" / "dashboard.png"


@dataclass
class Fleet:
    url: str
    sims: list  # the sim processes, in --worker-urls order (w0, w1, w2)
    stop_load: Callable[[], None]  # ends the load and waits for its last requests


# The load runs in a process of its own at a lower priority, as do the sims: on a 2-core CI
# machine, 16 client threads inside this pytest process (which also drives Playwright) and three
# busy sims starved the page and the router, the subjects here, of CPU, and "down within 2 s"
# failed on the test's own load (stop 23).
LOAD = """
import json, sys, threading, time, urllib.error, urllib.request

def chat(url, i):
    body = json.dumps({"model": "smollm2-135m", "max_tokens": 24,
                       "messages": [{"role": "user", "content": f"tell me about number {i} " * (1 + i % 5)}]})
    request = urllib.request.Request(url + "/v1/chat/completions", body.encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        time.sleep(0.05)  # a killed replica's retries may fail now and then; the load goes on

def load(url, worker):
    i = worker
    while True:
        chat(url, i)
        i += 16

for w in range(16):  # 16 clients for 3 replicas of 4 sequences each: a queue in every replica
    threading.Thread(target=load, args=(sys.argv[1], w), daemon=True).start()
threading.Event().wait()
"""
LOAD_NICENESS = 10


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    logs = tmp_path_factory.mktemp("dashboard")
    with ExitStack() as stack:
        sims, urls = [], []
        for i in range(3):
            port = free_port()
            sims.append(stack.enter_context(dpserve_process(
                ["sim", "--port", str(port), "--max-num-seqs", "4", "--kv-cache-tokens", "2048",
                 "--max-model-len", "1024", "--log-level", "warning"], port,
                log_path=logs / f"sim{i}.log", timeout_s=60)))
            urls.append(f"http://127.0.0.1:{port}")
        port = free_port()
        stack.enter_context(dpserve_process(
            ["router", "--port", str(port), "--policy", "round_robin", "--log-level", "warning",
             "--worker-urls", *urls], port, ready_path="/readiness", log_path=logs / "router.log",
            timeout_s=60))
        url = f"http://127.0.0.1:{port}"
        for sim in sims:
            os.setpriority(os.PRIO_PROCESS, sim.pid, LOAD_NICENESS)
        load = subprocess.Popen([sys.executable, "-c", LOAD, url], preexec_fn=lambda: os.nice(LOAD_NICENESS))

        def stop_load() -> None:
            if load.poll() is None:
                load.terminate()
                load.wait(timeout=40)

        stack.callback(stop_load)
        yield Fleet(url, sims, stop_load)


def test_top_shows_every_replica_and_quits_on_q_or_ctrl_c(fleet: Fleet) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "dpserve", "top", "--url", fleet.url], encoding="utf-8",
                          dimensions=(30, 140), timeout=30)
    try:
        for label in ("w0", "w1", "w2"):
            child.expect(label)
        child.expect("sort: name")
        child.send("t")  # sort by tokens/s
        child.expect("sort: tokens")
        child.send("q")
        child.expect(pexpect.EOF, timeout=30)  # generous: a loaded CI machine
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    child = pexpect.spawn(sys.executable, ["-m", "dpserve", "top", "--url", fleet.url], encoding="utf-8",
                          dimensions=(30, 140), timeout=30)
    try:
        child.expect("w2")
        child.sendintr()  # Ctrl-C
        child.expect(pexpect.EOF, timeout=30)  # generous: a loaded CI machine
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def _numbers(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all("#replicas tbody td.num", "cells => cells.map(c => c.textContent)")


def test_page_in_chromium_shows_the_fleet_live_and_a_killed_replica_down(fleet: Fleet) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: scripts/ensure-test-services.sh installs Debian's chromium "
                    "as root")
    sync_api = pytest.importorskip("playwright.sync_api")
    problems: list[str] = []
    with sync_api.sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1400, "height": 1250})
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(fleet.url + "/dashboard")
            # Predicates are functions, not expressions: Playwright evaluates an expression string
            # again on every poll, and the page's CSP (no 'unsafe-eval') refuses each one after the
            # first, so a predicate not already true on the first check failed (CI, stop 22).
            page.wait_for_function(  # three rows, each with a token rate from a scrape
                "() => document.querySelectorAll('#replicas tbody tr').length === 3 && [...document."
                "querySelectorAll('#replicas td[data-col=tokens]')].every(c => c.textContent !== '–')",
                timeout=20_000)
            rows = page.eval_on_selector_all("#replicas tbody tr", "rows => rows.map(r => r.dataset.replica)")
            assert rows == ["w0", "w1", "w2"]
            first = _numbers(page)
            page.wait_for_timeout(2_500)  # two more samples while the load runs
            assert _numbers(page) != first
            if os.environ.get("DPSERVE_UPDATE_SCREENSHOT") == "1":
                page.wait_for_timeout(45_000)  # some history in the charts
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
            fleet.sims[1].send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            page.wait_for_selector('tr[data-replica="w1"][data-health="down"]', timeout=2_000)
            assert time.monotonic() - killed_at < 2.0
            assert page.eval_on_selector_all(
                "#replicas tbody tr", "rows => rows.map(r => r.dataset.health)") == ["up", "down", "up"]
            page.wait_for_function("() => document.getElementById('diagnosis-text').textContent"
                                   ".includes('1 of 3 replicas down')", timeout=3_000)
        finally:
            browser.close()
    assert problems == [], problems


def test_after_the_load_stops_every_token_rate_falls_to_zero(fleet: Fleet) -> None:
    """Idle replicas are no longer polled; the dashboard must not repeat their last busy rate
    (it did: 3318 tok/s with nothing running). Runs last: it ends the module's load."""
    def data() -> dict:
        with urllib.request.urlopen(fleet.url + "/dashboard/data?series=0", timeout=10) as resp:
            return json.loads(resp.read())

    assert (data()["fleet"]["generation_tokens_per_s"] or 0) > 0  # the load is running
    fleet.stop_load()
    stopped_at = time.monotonic()
    deadline = stopped_at + 30  # the 5 s rate window, with room for a loaded machine
    rates: list[float | None] = []
    while time.monotonic() < deadline:
        doc = data()
        rates = [doc["fleet"]["generation_tokens_per_s"]]
        rates += [r["generation_tokens_per_s"] for r in doc["replicas"]]
        if doc["fleet"]["in_flight"] == 0 and all(not rate for rate in rates):
            break
        time.sleep(0.25)
    else:
        pytest.fail(f"token rates still {rates} {time.monotonic() - stopped_at:.1f} s after the load stopped")
    print(f"all token rates 0 after {time.monotonic() - stopped_at:.1f} s")
