"""Run a Ray test module inside a network + PID namespace of its own, and read back its results.

Ray registers its nodes under the host's interface address; our tests may only talk to loopback.
So each Ray test module runs as `unshare --net --pid --fork --mount-proc` → `ip link set lo up` →
pytest on that module alone: in there only `lo` exists (nothing can leave the namespace), both
Ray nodes are 127.0.0.1, and when the module ends the namespace's first process exits, which makes
the kernel kill every process left in it — no raylet, GCS, worker or replica can outlive the run.
The outer pytest shows one result per test, read from the inner run's JUnit XML.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

INSIDE_ENV = "DPSERVE_RAY_NETNS"  # set to "1" for the pytest that runs inside the namespace
_PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Outcome:
    status: str  # "passed" | "failed" | "skipped"
    text: str = ""


def inside_namespace() -> bool:
    return os.environ.get(INSIDE_ENV) == "1"


def test_names(module_path: Path) -> list[str]:
    """The module's top-level test functions, in file order (no import: it would need Ray)."""
    tree = ast.parse(module_path.read_text(), str(module_path))
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")]


@functools.cache
def why_not_runnable() -> str | None:
    """None when a namespace can be made here and Ray is installed, else the reason to skip."""
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install 'dpserve[ray]'; make test installs it)"
    if os.geteuid() != 0:
        return "making a network namespace (unshare --net) needs root; Ray tests run loopback-only in one"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found: cannot make a loopback-only network namespace for the Ray tests"
    probe = subprocess.run([*_unshare_argv(), "sh", "-c", "ip link set lo up"], capture_output=True,
                           text=True, timeout=_PROBE_TIMEOUT_S, check=False)
    if probe.returncode != 0:
        return f"cannot make a network namespace here: {probe.stderr.strip()[:300]}"
    return None


def _unshare_argv() -> list[str]:
    # --kill-child: if we die (a timeout kills us), the namespace's first process goes too, and
    # with it every process in the namespace.
    return ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]


def namespace_argv(command: list[str]) -> list[str]:
    """`command` run in a fresh namespace with only `lo`, up; sh stays its first process (the
    Ray test cluster checks for it before it starts or stops anything)."""
    script = 'ip link set lo up || exit 97; "$@"; exit $?'
    return [*_unshare_argv(), "sh", "-c", script, "sh", *command]


def namespace_env() -> dict[str, str]:
    # Token auth off: the cluster is reachable from nothing but this namespace, and with the mode
    # unset Ray 2.60 turns it on whenever ~/.ray/auth_token exists — state shared with any other
    # Ray run on the machine, which made `ray start` of the second node fail once.
    return {**os.environ, INSIDE_ENV: "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def run_module(module_path: Path, names: list[str], work_dir: Path,
               timeout_s: float) -> tuple[dict[str, Outcome], str]:
    """Run pytest on these tests of one module inside a fresh namespace; (test name → outcome, the
    run's output)."""
    report, log_path = work_dir / "junit.xml", work_dir / "inner.log"
    argv = namespace_argv([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--basetemp={work_dir / 'tmp'}", f"--junitxml={report}",
                           "-o", "junit_logging=all", "--durations=0",
                           *(f"{module_path}::{name}" for name in names)])
    env = namespace_env()
    with open(log_path, "wb") as log:
        try:
            subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s,
                           check=False, cwd=Path(__file__).resolve().parents[2])
        except subprocess.TimeoutExpired:
            log.write(f"\n--- the namespace run took over {timeout_s:g}s and was killed\n".encode())
    output = log_path.read_text(errors="replace")
    return (read_junit(report) if report.exists() else {}), output


def read_junit(path: Path) -> dict[str, Outcome]:
    """testcase name → passed / failed (failure or error, text joined) / skipped (reason)."""
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        problems = [el for el in case if el.tag in ("failure", "error")]
        skipped = case.find("skipped")
        if problems:
            text = "\n\n".join(f"{el.get('message', '')}\n{el.text or ''}" for el in problems)
            outcomes[case.get("name", "")] = Outcome("failed", text)
        elif skipped is not None:
            outcomes[case.get("name", "")] = Outcome("skipped", skipped.get("message", ""))
        else:
            outcomes[case.get("name", "")] = Outcome("passed")
    return outcomes
