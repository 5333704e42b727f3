"""Tie a child process's life to its parent's: the kernel signals the child when the parent dies."""

from __future__ import annotations

import ctypes
import os
import sys

_PR_SET_PDEATHSIG = 1


def load_libc() -> ctypes.CDLL | None:
    """libc for `die_with_parent`; load it before forking (no dlopen between fork and exec)."""
    return ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(libc: ctypes.CDLL | None, death_signal: int, parent_pid: int) -> None:
    """In the child: PR_SET_PDEATHSIG, then exit at once if `parent_pid` already died before it took
    effect. Only a prctl and a getppid, so it is safe between fork and exec. No-op off Linux."""
    if libc is None:
        return
    libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)
