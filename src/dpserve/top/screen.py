"""The `dpserve top` loop: fetch the dashboard document, redraw in place, react to keys; q or Ctrl-C quits."""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import termios
import time
import tty
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live

from dpserve.top.config import ADMIN_KEY_ENV, TopConfig
from dpserve.top.rows import KEY_BINDINGS, next_sort_key
from dpserve.top.table import frame

DATA_PATH = "/dashboard/data?series=0"  # the table needs no history


# Ctrl-C arrives as this key, not as SIGINT, while the screen is up: a KeyboardInterrupt raised
# at any point of a redraw could leave the terminal (or rich's Live) half torn down; a key is
# read between redraws and quits like q, within a redraw or a fetch (--timeout-s) at most.
CTRL_C = "\x03"
QUIT_KEYS = ("q", "Q", CTRL_C)


class KeyReader:
    """Single key presses from a terminal stdin without echo (cbreak, and Ctrl-C as a key, see
    CTRL_C); the terminal is restored on exit. Without a terminal, `read` only waits."""

    def __init__(self) -> None:
        self._fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
        self._saved: list[Any] | None = None

    def __enter__(self) -> KeyReader:
        if self._fd is not None:
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
            mode = termios.tcgetattr(self._fd)
            mode[3] &= ~termios.ISIG  # lflag: Ctrl-C, Ctrl-\ and Ctrl-Z are keys now
            termios.tcsetattr(self._fd, termios.TCSANOW, mode)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None and self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout_s: float) -> str:
        """The keys pressed within `timeout_s` ("" if none)."""
        if self._fd is None:
            time.sleep(timeout_s)
            return ""
        ready, _, _ = select.select([self._fd], [], [], timeout_s)
        return os.read(self._fd, 64).decode(errors="ignore") if ready else ""


def fetch(config: TopConfig, key: str | None) -> dict[str, Any]:
    """The gateway's dashboard document; OSError/ValueError with a short reason otherwise."""
    request = urllib.request.Request(config.url.rstrip("/") + DATA_PATH)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=config.timeout_s) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        hint = f" (set --admin-key or ${ADMIN_KEY_ENV})" if exc.code == 401 else ""
        raise OSError(f"gateway answered {exc.code}{hint}") from exc
    except urllib.error.URLError as exc:
        raise OSError(f"gateway unreachable: {exc.reason}") from exc
    if not isinstance(doc, dict) or "replicas" not in doc:
        raise ValueError("not a dpserve dashboard document")
    return doc


def run_top(config: TopConfig) -> int:
    key = config.admin_key or os.environ.get(ADMIN_KEY_ENV) or None
    console = Console()
    if config.once or not console.is_terminal:
        if not console.is_terminal:  # a pipe or a file: no screen width to fit
            console = Console(width=200)
        try:
            doc = fetch(config, key)
        except (OSError, ValueError) as exc:
            print(f"dpserve top: {exc}", file=sys.stderr)
            return 1
        console.print(frame(doc, config.sort, config.reverse, None, config.url))
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is a normal way out
        _live(config, key, console)
    return 0


def _live(config: TopConfig, key: str | None, console: Console) -> None:
    sort, reverse = config.sort, config.reverse
    doc: dict[str, Any] | None = None
    with KeyReader() as keys, Live(console=console, screen=True, auto_refresh=False) as live:
        while True:
            error = None
            try:
                doc = fetch(config, key)
            except (OSError, ValueError) as exc:
                error = str(exc)
            live.update(frame(doc, sort, reverse, error, config.url), refresh=True)
            deadline = time.monotonic() + config.interval_s
            while (left := deadline - time.monotonic()) > 0:
                pressed = keys.read(left)
                if any(key in pressed for key in QUIT_KEYS):
                    return
                for ch in pressed:
                    if ch in KEY_BINDINGS:
                        sort = KEY_BINDINGS[ch]
                    elif ch == "s":
                        sort = next_sort_key(sort)
                    elif ch == "o":
                        reverse = not reverse
                if pressed:
                    live.update(frame(doc, sort, reverse, error, config.url), refresh=True)
