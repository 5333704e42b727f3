"""The `dpserve` entry point: command table, help, unknown commands."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from dpserve.cli import COMMANDS, EXIT_READER_LEFT, main


def test_usage_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "valid: serve" in capsys.readouterr().err


def test_python_dash_m_works() -> None:
    proc = subprocess.run([sys.executable, "-m", "dpserve", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.strip()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "--log-level" in capsys.readouterr().out


# A user's stdout is block-buffered: what a command prints is written at its end, or at exit.
BUFFERED = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize("args", [["plan", "--model", "llama-3.1-70b"], ["--help"], ["top", "--help"],
                                  ["plan", "--diagnose", "http://a..b:1"]])
def test_a_reader_that_leaves_early_ends_the_command_quietly(args: list[str]) -> None:
    """`dpserve plan | true`: the reader is gone before anything is printed."""
    proc = subprocess.Popen([sys.executable, "-m", "dpserve", *args], env=BUFFERED,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the interpreter has even imported dpserve
    err = proc.stderr.read()
    code = proc.wait(timeout=60)
    if args[-1].startswith("http"):  # bad input: its one line on stderr, nothing for stdout
        assert code == 2 and err.count(b"\n") == 1
        return
    assert code == EXIT_READER_LEFT
    assert err == b""


def test_a_full_disk_is_one_line() -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "dpserve", "plan", "--model", "llama-3.1-70b", "--json"],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                              env=BUFFERED)
    assert proc.returncode == 1
    assert proc.stderr == "dpserve plan: error: cannot write output: No space left on device\n"


def _failing_run(monkeypatch: pytest.MonkeyPatch, exc: OSError) -> None:
    def run(config: object, common: object) -> int:
        raise exc

    monkeypatch.setattr("dpserve.planner.command.run", run)


def test_a_broken_pipe_other_than_stdout_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_run(monkeypatch, BrokenPipeError(errno.EPIPE, "Broken pipe"))  # stdout here is pytest's
    with pytest.raises(BrokenPipeError):
        main(["plan"])


def test_a_full_disk_under_a_file_names_the_file(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _failing_run(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/cache/model.safetensors"))
    assert main(["plan"]) == 1
    assert capsys.readouterr().err == ("dpserve plan: error: cannot write /cache/model.safetensors: "
                                       "No space left on device\n")


def test_stdout_closed_at_start_is_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "dpserve", "plan", "--model", "llama-3.1-8b", "--json"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
                          check=False, env=BUFFERED, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 0 and proc.stderr == ""


def test_other_os_errors_are_not_called_output_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_run(monkeypatch, PermissionError(errno.EACCES, "Permission denied"))
    with pytest.raises(PermissionError):
        main(["plan"])
