"""argv → subcommand: each command module provides CONFIG_CLASS and run(config, common) -> int.

Command modules are imported lazily so `dpserve --help` and light commands stay fast.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from dpserve.config import ConfigError, parse_config
from dpserve.log import setup_logging


@dataclass(frozen=True)
class CommandSpec:
    module: str
    summary: str


COMMANDS: dict[str, CommandSpec] = {
    "serve": CommandSpec("dpserve.launcher.command",
                         "co-launch --dp-size replicas and the gateway (the main job)"),
    "router": CommandSpec("dpserve.gateway.command", "the gateway alone, in front of --worker-urls"),
    "engine": CommandSpec("dpserve.engine.command", "one built-in replica server (PyTorch)"),
    "sim": CommandSpec("dpserve.sim.command", "one simulated replica (timing + prefix-cache model)"),
    "batch": CommandSpec("dpserve.offline.command", "offline inference over a JSONL batch file"),
    "bench": CommandSpec("dpserve.bench.command", "load generator for OpenAI-compatible URLs"),
    "plan": CommandSpec("dpserve.planner.command",
                        "choose DP × TP × PP for a model on N GPUs; --simulate it, --diagnose a fleet"),
    "top": CommandSpec("dpserve.top.command", "live per-replica table of a gateway in the terminal"),
}


def _usage() -> str:
    lines = ["usage: dpserve COMMAND [flags]   (dpserve COMMAND --help for its flags)", "",
             "commands:"]
    lines += [f"  {name:<8} {spec.summary}" for name, spec in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        try:
            print(_usage(), flush=True)
        except BrokenPipeError:  # `dpserve --help | head`: the reader left, nothing to report
            sys.stdout = None
        return 0 if args else 2
    if args[0] == "--version":
        from dpserve import __version__

        print(__version__)
        return 0
    name, rest = args[0], args[1:]
    spec = COMMANDS.get(name)
    if spec is None:
        print(f"dpserve: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(spec.module)
    try:
        config, common = parse_config(module.CONFIG_CLASS, rest, f"dpserve {name}", spec.summary)
    except ConfigError as exc:
        print(f"dpserve {name}: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(common.log_level)
    try:
        return int(module.run(config, common) or 0)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"dpserve {name}: error: {exc}", file=sys.stderr)
        return 2
