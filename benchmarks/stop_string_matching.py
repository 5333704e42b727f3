"""Stop-string matching cost over one answer: the matcher of a git revision against the tree's.

    python benchmarks/stop_string_matching.py [--before REV] [--repeats N]

`--before` names a revision whose src/dpserve/serving/detokenizer.py still holds the old
StopStringMatcher (the whole-text search); the tree's is dpserve.serving.stop_strings. Each case
feeds 600 deltas of " word" (an answer of 600 tokens) and reports the best of N runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dpserve.serving.stop_strings import StopStringMatcher

CASES = {
    "100 stops x 10 KB (the issue's request)": ["\u2603" * 10000 + str(i) for i in range(100)],
    "4 x 1024 chars (the new limit)": ["\u2603" * 1023 + str(i) for i in range(4)],
    "4 x 1024 chars, self-overlapping": [" word" * 204 + str(i) for i in range(4)],
    "1 x 2 chars": ["\n\n"],
    "none": [],
}


def load_before(rev: str) -> Any:
    source = subprocess.run(["git", "show", f"{rev}:src/dpserve/serving/detokenizer.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "before_detokenizer.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("before_detokenizer", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.StopStringMatcher


def best_time_s(matcher_class: Any, stops: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        matcher = matcher_class(stops)
        start = time.perf_counter()
        for _ in range(600):
            matcher.push(" word")
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="547c985", help="revision with the old matcher")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    before = load_before(args.before)
    print(f"| stop strings | before ({args.before}) | after |\n| --- | --- | --- |")
    for name, stops in CASES.items():
        old, new = (best_time_s(cls, stops, args.repeats) for cls in (before, StopStringMatcher))
        print(f"| {name} | {old * 1000:.1f} ms | {new * 1000:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
