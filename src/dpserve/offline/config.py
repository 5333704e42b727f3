"""BatchConfig: every flag of `dpserve batch`, validated once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dpserve.config import nested, option, require
from dpserve.launcher.config import LaunchConfig

ProgressMode = Literal["auto", "bar", "lines", "none"]  # not "off": YAML reads that as false


@dataclass(frozen=True)
class BatchConfig:
    """Input/output files, where the replicas come from, and how work is spread over them."""

    input: Path = option(positional=True, metavar="IN.jsonl",
                         help="OpenAI batch input file: one {custom_id, method, url, body} per line")
    output: Path = option(flag="--output", aliases=("-o",), metavar="OUT.jsonl",
                          help="results, one line per request, appended as they complete")
    worker_urls: tuple[str, ...] = option((), metavar="URL",
                                          help="use these running replicas instead of launching")
    # Used when --worker-urls is not given. The job talks to its replicas directly: no gateway to
    # subscribe to KV events or to be scraped next to them, so those two flags are serve's only.
    launch: LaunchConfig = nested(LaunchConfig, exclude=("kv_events", "write_prometheus_config"))
    max_inflight_per_replica: int = option(8, help="requests kept in flight on each replica")
    max_retries: int = option(3, help="retries of a failed request, each on another replica if any")
    request_timeout_s: float = option(600.0, help="give up on one attempt after this long")
    group_by_prefix: bool = option(False, help="send requests sharing a long prefix to the same "
                                               "replica back to back (prefix-cache reuse)")
    prefix_chars: int = option(256, help="--group-by-prefix: length of the shared prompt prefix "
                                         "(characters) that puts requests in one group")
    resume: bool = option(False, help="continue an interrupted run: skip custom_ids already in OUT")
    preserve_order: bool = option(False, help="write OUT in input order")
    order_window: int = option(1024, help="--preserve-order: most results held back at once")
    fsync_interval_s: float = option(1.0, help="fsync OUT at most this often (and at the end)")
    progress: ProgressMode = option("auto", help="auto = a bar on a terminal, plain lines otherwise")
    progress_interval_s: float = option(10.0, help="seconds between plain progress lines")
    down_probe_interval_s: float = option(0.5, help="seconds between /health probes of a replica "
                                                    "marked down (dead replicas come back this way)")
    no_replica_timeout_s: float = option(120.0, help="stop the job (resumable) when no replica "
                                                     "has been healthy for this long")
    summary_json: Path | None = option(None, metavar="FILE.json", help="also write the summary here")

    def __post_init__(self) -> None:
        require(self.max_inflight_per_replica >= 1, "--max-inflight-per-replica must be >= 1")
        require(self.max_retries >= 0, "--max-retries must be >= 0")
        require(self.request_timeout_s > 0, "--request-timeout-s must be > 0")
        require(self.prefix_chars >= 1, "--prefix-chars must be >= 1")
        require(self.order_window >= 1, "--order-window must be >= 1")
        require(self.fsync_interval_s >= 0, "--fsync-interval-s must be >= 0")
        require(self.progress_interval_s > 0, "--progress-interval-s must be > 0")
        require(self.down_probe_interval_s > 0, "--down-probe-interval-s must be > 0")
        require(self.no_replica_timeout_s > 0, "--no-replica-timeout-s must be > 0")
        require(not (self.preserve_order and self.group_by_prefix),
                "--preserve-order and --group-by-prefix cannot be combined (grouping reorders work)")
        require(all(u.startswith(("http://", "https://")) for u in self.worker_urls),
                "--worker-urls must be http(s):// URLs")
        require(not (self.worker_urls and self.launch.ray),
                "--ray places co-launched replicas; it cannot be combined with --worker-urls")
        require(Path(self.input).resolve() != Path(self.output).resolve(),
                "the output file must differ from the input file")
