"""Parsing /proc/net/tcp* for listening sockets, and finding the holder of a real one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from dpserve.launcher.port_owner import group_listens_on, listening_inodes

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def test_only_listening_sockets_on_the_port_count(tmp_path: Path) -> None:
    (tmp_path / "tcp").write_text(
        HEADER
        + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 111 1\n"
        + "   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  0  0 222 1\n"
        + "   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 333 1\n")
    (tmp_path / "tcp6").write_text(
        HEADER + "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A "
                 "00000000:00000000 00:00000000 00000000  0  0 444 1\n")
    assert listening_inodes(8080, tmp_path) == {"111", "444"}
    assert listening_inodes(9999, tmp_path) == set()


def test_no_proc_net_means_unknown(tmp_path: Path) -> None:
    assert listening_inodes(80, tmp_path / "missing") is None


def test_finds_that_our_group_holds_a_real_listening_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert group_listens_on(os.getpgid(0), port) is True
        assert group_listens_on(os.getpgid(0) + 1_000_000, port) is False
