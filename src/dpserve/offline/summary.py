"""The end-of-job summary: counts, tokens, throughput, wall time and each replica's share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dpserve.offline.progress import ProgressState
from dpserve.offline.replicas import Replica


@dataclass(frozen=True)
class ReplicaShare:
    id: str
    url: str
    completed: int
    share: float  # fraction of this run's successful requests
    failed_attempts: int
    output_tokens: int


@dataclass(frozen=True)
class Summary:
    input_requests: int  # valid requests in the input file
    invalid_lines: int  # malformed input lines reported (this run)
    skipped_already_done: int  # --resume: found in OUT before this run
    succeeded: int
    failed: int
    retried: int
    output_tokens: int
    wall_time_s: float
    request_throughput: float
    output_throughput: float
    replicas: list[ReplicaShare] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_summary(state: ProgressState, replicas: list[Replica], *, input_requests: int,
                  invalid_lines: int, skipped: int, now: float) -> Summary:
    elapsed = state.elapsed_s(now)
    succeeded = state.done - state.failed
    total_ok = sum(r.completed for r in replicas) or 1
    shares = [ReplicaShare(r.id, r.url, r.completed, r.completed / total_ok, r.failed_attempts,
                           r.output_tokens) for r in replicas]
    return Summary(input_requests=input_requests, invalid_lines=invalid_lines,
                   skipped_already_done=skipped, succeeded=succeeded, failed=state.failed,
                   retried=state.retried, output_tokens=state.output_tokens, wall_time_s=elapsed,
                   request_throughput=state.done / elapsed, output_throughput=state.output_tokens / elapsed,
                   replicas=shares)


def format_summary(s: Summary) -> str:
    lines = [
        "batch summary",
        f"  requests      {s.input_requests} in input, {s.skipped_already_done} already done, "
        f"{s.succeeded} succeeded, {s.failed} failed, {s.retried} retries",
        f"  invalid lines {s.invalid_lines}",
        f"  output tokens {s.output_tokens}",
        f"  wall time     {s.wall_time_s:.2f} s",
        f"  throughput    {s.request_throughput:.2f} req/s, {s.output_throughput:.1f} output tok/s",
        "  per replica:",
    ]
    lines += [f"    {r.id} {r.url}: {r.completed} ok ({100 * r.share:.1f}%), "
              f"{r.failed_attempts} failed attempts, {r.output_tokens} tokens" for r in s.replicas]
    return "\n".join(lines)
