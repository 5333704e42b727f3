"""Before any request is sent: scan and validate the input, reconcile with OUT for --resume."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dpserve.config import ConfigError
from dpserve.offline.config import BatchConfig
from dpserve.offline.reader import InvalidLine, RequestRef, scan_input
from dpserve.offline.resume import read_done

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobPlan:
    """The work of this run: requests still to answer and malformed lines still to report."""

    pending: list[RequestRef]
    invalid: list[InvalidLine]
    input_requests: int
    skipped: int

    @property
    def output_order(self) -> list[int]:
        """Input line numbers of every line this run writes, in input order."""
        return sorted([r.line_no for r in self.pending] + [i.line_no for i in self.invalid])


def _check_output(config: BatchConfig) -> None:
    out = config.output
    if out.exists() and out.stat().st_size > 0 and not config.resume:
        raise ConfigError(f"{out} already has results; pass --resume to continue that run, "
                          "or remove the file to start over")
    if not out.parent.exists():
        raise ConfigError(f"output directory {out.parent} does not exist")


def plan_job(config: BatchConfig) -> JobPlan:
    """Raises ConfigError (exit 2) for unreadable input, duplicate custom_ids, or an OUT clash."""
    try:
        scan = scan_input(config.input, config.prefix_chars if config.group_by_prefix else None)
    except OSError as exc:
        raise ConfigError(f"cannot read input {config.input}: {exc.strerror}") from exc
    _check_output(config)
    done = read_done(config.output) if config.resume else None
    done_ids = done.custom_ids if done else set()
    pending = [r for r in scan.requests if r.custom_id not in done_ids]
    invalid = [i for i in scan.invalid
               if not (done and (i.line_no in done.invalid_lines or i.custom_id in done_ids))]
    for bad in invalid:
        logger.warning("%s line %d skipped: %s", config.input, bad.line_no, bad.message)
    if done:
        logger.info("resuming: %d lines already in %s, %d requests left",
                    done.num_lines, config.output, len(pending))
    return JobPlan(pending, invalid, len(scan.requests), len(scan.requests) - len(pending))
