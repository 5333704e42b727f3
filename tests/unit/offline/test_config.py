"""BatchConfig from argv: positional input, -o alias, nested launch flags, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpserve.config import ConfigError, parse_config
from dpserve.offline.config import BatchConfig


def test_positional_input_and_short_output_flag() -> None:
    cfg, _ = parse_config(BatchConfig, ["in.jsonl", "-o", "out.jsonl", "--dp-size", "3"], "dpserve batch")
    assert cfg.input == Path("in.jsonl") and cfg.output == Path("out.jsonl") and cfg.launch.dp_size == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["in.jsonl"], "--output"),
    (["in.jsonl", "-o", "o", "--preserve-order", "--group-by-prefix"], "cannot be combined"),
    (["in.jsonl", "-o", "o", "--max-inflight-per-replica", "0"], "must be >= 1"),
    (["in.jsonl", "-o", "in.jsonl"], "must differ"),
    (["in.jsonl", "-o", "o", "--worker-urls", "localhost:1"], "http"),
    (["in.jsonl", "-o", "o", "--worker-urls", "http://a:1", "--ray"], "not be combined with --worker-urls"),
    # serve's only: the job talks to its replicas directly (no gateway subscribes, none is scraped)
    (["in.jsonl", "-o", "o", "--kv-events"], "unknown flag --kv-events"),
    (["in.jsonl", "-o", "o", "--write-prometheus-config", "p.yml"], "unknown flag --write-prometheus-config"),
])
def test_invalid_flags_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(BatchConfig, argv, "dpserve batch")


def test_input_and_output_may_come_from_yaml(tmp_path: Path) -> None:
    cfg_file = tmp_path / "batch.yaml"
    cfg_file.write_text("input: in.jsonl\noutput: out.jsonl\nprogress: none\ngroup_by_prefix: true\n")
    cfg, _ = parse_config(BatchConfig, ["--config", str(cfg_file)], "dpserve batch")
    assert (cfg.input, cfg.output, cfg.progress, cfg.group_by_prefix) == (
        Path("in.jsonl"), Path("out.jsonl"), "none", True)
    cli_wins, _ = parse_config(BatchConfig, ["other.jsonl", "--config", str(cfg_file)], "dpserve batch")
    assert cli_wins.input == Path("other.jsonl")
