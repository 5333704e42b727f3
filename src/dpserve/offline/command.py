"""`dpserve batch IN.jsonl -o OUT.jsonl`: light to import; the job lives in offline.job."""

from __future__ import annotations

from dpserve.config import CommonOptions
from dpserve.offline.config import BatchConfig

CONFIG_CLASS = BatchConfig


def run(config: BatchConfig, common: CommonOptions) -> int:
    from dpserve.offline.job import run_batch

    return run_batch(config)
