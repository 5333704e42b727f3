"""argv → subcommand: each command module provides CONFIG_CLASS and run(config, common) -> int.

Command modules are imported lazily so `dpserve --help` and light commands stay fast.
"""

from __future__ import annotations

import errno
import importlib
import os
import select
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from dpserve.config import ConfigError, parse_config
from dpserve.log import setup_logging

# 128 + SIGPIPE: what a shell reports for a program the closed pipe stopped (`yes | head -1`).
EXIT_READER_LEFT = 141
# Errors only writing raises: stdout on a full disk (`> /dev/full`), an output file over quota.
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


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
    prog = f"dpserve {args[0]}" if args and args[0] in COMMANDS else "dpserve"
    try:
        try:
            return _dispatch(args)
        finally:  # also after argparse's --help (SystemExit): what is still buffered fails here,
            if sys.stdout is not None:  # where it is reported, not in the interpreter's last flush
                sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_reader_left():
            raise  # some other pipe: a bug to see, not a reader to let go
        _discard_stdout()  # `dpserve plan | head -1`: the reader left, nothing to report
        return EXIT_READER_LEFT
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        if exc.filename is not None:  # a file the command writes, not its output
            print(f"{prog}: error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 1
        _discard_stdout()
        print(f"{prog}: error: cannot write output: {exc.strerror}", file=sys.stderr)
        return 1


def _stdout_reader_left() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports POLLERR on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # stdout is no file (under a test harness)
        return False


def _discard_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's final flush of what is still buffered would
    otherwise fail again and print "Exception ignored" on stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is no file (under a test harness)
        pass


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(_usage(), flush=True)
        return 0 if args else 2
    if args[0] == "--version":
        from dpserve import __version__

        print(__version__, flush=True)
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
