"""Who listens on a port: is it the replica we started, or some other program that took it?

A replica's /health answering is not proof enough: if another program grabbed the port, its
server answers while ours failed to bind. On Linux we check that the listening socket belongs to
a process of the replica's process group (/proc/net/tcp* inode ↔ /proc/PID/fd links).
"""

from __future__ import annotations

import os
from pathlib import Path

_LISTEN = "0A"


def listening_inodes(port: int, proc_net: Path = Path("/proc/net")) -> set[str] | None:
    """Socket inodes in LISTEN state on `port` (any address); None where /proc/net is missing."""
    inodes: set[str] = set()
    found_table = False
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc_net / table).read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes if found_table else None


def group_pids(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """Processes whose process group is `pgid`."""
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:  # fields after comm: state ppid pgrp
            pids.append(int(entry.name))
    return pids


def group_listens_on(pgid: int, port: int) -> bool | None:
    """True if a process of group `pgid` holds the listening socket of `port`; None if unknowable."""
    inodes = listening_inodes(port)
    if inodes is None:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    return any(_fd_links(pid) & wanted for pid in group_pids(pgid))


def _fd_links(pid: int) -> set[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return set()
    links = set()
    for name in names:
        try:
            links.add(os.readlink(fd_dir / name))
        except OSError:  # closed meanwhile (e.g. the fd listdir itself used)
            continue
    return links
