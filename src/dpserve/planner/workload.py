"""The planned workload: lengths and offered load, from flags or a `dpserve bench` config file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpserve.config import ConfigError
from dpserve.planner.config import check_workload
from dpserve.planner.formulas import Shape

DEFAULT_PROMPT_LEN = 1024
DEFAULT_OUTPUT_LEN = 256
DEFAULT_CONCURRENCY = 64


@dataclass(frozen=True)
class Workload:
    """Exactly one of `concurrency` (closed loop: that many requests in flight over the fleet) and
    `request_rate` (open loop: Poisson arrivals per second) is set."""

    prompt_len: int
    output_len: int
    concurrency: int | None = None
    request_rate: float | None = None

    @property
    def shape(self) -> Shape:
        return Shape(self.prompt_len, self.output_len)

    @property
    def load_words(self) -> str:
        if self.request_rate is not None:
            return f"{self.request_rate:g} req/s"
        return f"concurrency {self.concurrency}"


def bench_file_values(path: Path) -> dict[str, Any]:
    """Lengths and load from a `dpserve bench --config FILE.yaml` (its keys are bench flags). The
    prompt length is the workload's: random/sharegpt `input_len`; shared-prefix system prompt +
    question; multi-turn the mean history a turn sends ((turns+1)/2 user turns, (turns−1)/2 replies,
    a half token rounded up). The values are held to the flags' bounds (check_workload)."""
    from dpserve.bench.config import BenchConfig
    from dpserve.config import build_config, read_config_file

    try:
        bench = build_config(BenchConfig, read_config_file(path, BenchConfig))
    except ConfigError as exc:
        raise ConfigError(f"--workload-file {path}: {exc}") from exc
    if bench.workload == "shared-prefix":
        prompt = bench.system_prompt_len + bench.question_len
    elif bench.workload == "multi-turn":
        # integers throughout: the file's numbers are unbounded, a float of them could overflow
        prompt = (bench.input_len * (bench.turns + 1) + bench.output_len * (bench.turns - 1) + 1) // 2
    else:
        prompt = bench.input_len
    values: dict[str, Any] = {"prompt_len": prompt, "output_len": bench.output_len}
    if bench.request_rate is not None:
        values["request_rate"] = bench.request_rate
    else:
        values["concurrency"] = bench.max_in_flight
    check_workload(values, lambda key: f"--workload-file {path}: {key}")
    return values


def resolve_workload(prompt_len: int | None, output_len: int | None, concurrency: int | None,
                     request_rate: float | None, workload_file: Path | None) -> Workload:
    """Flags win over the bench file; the file over the defaults."""
    base = bench_file_values(workload_file) if workload_file is not None else {}
    if concurrency is not None or request_rate is not None:
        base.pop("concurrency", None)
        base.pop("request_rate", None)
    rate = request_rate if request_rate is not None else base.get("request_rate")
    conc = concurrency if concurrency is not None else base.get("concurrency")
    if rate is None and conc is None:
        conc = DEFAULT_CONCURRENCY
    return Workload(prompt_len if prompt_len is not None else base.get("prompt_len", DEFAULT_PROMPT_LEN),
                    output_len if output_len is not None else base.get("output_len", DEFAULT_OUTPUT_LEN),
                    conc, rate)
