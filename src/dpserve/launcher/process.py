"""Start one replica process in its own process group, tied to our life; stop the whole group.

In the child, before exec: a new session (so the group can be signalled as a whole and Ctrl-C at
the terminal reaches only us), PR_SET_PDEATHSIG (the kernel signals it if we die), and the CPU
affinity of its placement.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence

from dpserve.aio import wait_for
from dpserve.parent_death import die_with_parent, load_libc

_STREAM_LIMIT = 1 << 20  # longest log line read as one line


def _make_preexec(cpu_cores: Sequence[int], death_signal: int) -> Callable[[], None]:
    """The function run in the forked child. Everything it needs is prepared here, in the parent:
    after fork only async-signal-safe work is wise (no imports, no dlopen)."""
    parent_pid = os.getpid()
    libc = load_libc()
    cores = set(cpu_cores)

    def preexec() -> None:
        die_with_parent(libc, death_signal, parent_pid)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())  # a parent may run with SIGINT blocked (Ray)
        if cores:
            os.sched_setaffinity(0, cores)

    return preexec


async def spawn(argv: Sequence[str], env: Mapping[str, str], cpu_cores: Sequence[int] = (),
                death_signal: int = signal.SIGTERM) -> asyncio.subprocess.Process:
    """Start argv with stdout+stderr piped to us, in a new session whose group id is its pid."""
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=dict(env), start_new_session=True,
        preexec_fn=_make_preexec(cpu_cores, death_signal), limit=_STREAM_LIMIT)


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def stop_group(proc: asyncio.subprocess.Process, grace_s: float) -> int:
    """SIGTERM the process group, SIGKILL it after grace_s; returns the leader's exit code.

    The group is killed once more after the leader is reaped, for children it left behind.
    """
    pgid = proc.pid
    if proc.returncode is None:
        signal_group(pgid, signal.SIGTERM)
        signal_group(pgid, signal.SIGCONT)  # a stopped (SIGSTOP) process only acts on SIGTERM once resumed
        try:
            await wait_for(proc.wait(), timeout=grace_s)
        except TimeoutError:
            signal_group(pgid, signal.SIGKILL)
            await proc.wait()
    signal_group(pgid, signal.SIGKILL)
    return proc.returncode if proc.returncode is not None else -1
