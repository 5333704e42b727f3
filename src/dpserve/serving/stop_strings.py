"""Stop strings found incrementally: each new character costs O(number of stop strings), however long
the output or the stop strings are.

Searching the whole output (or even a window the length of the longest stop string) on every token
made 100 stop strings of 10 KB turn 600 tokens from 0.21 s into 12.8 s. Instead every stop string
has a Knuth–Morris–Pratt automaton whose state is the length of the longest suffix of the output
that is a prefix of that stop string: it says both when the stop string is complete and how much
text must be held back because it may be the start of one.
"""

from __future__ import annotations

from collections.abc import Sequence


class _StopAutomaton:
    """One stop string: `state` = longest output suffix that is a prefix of it (KMP)."""

    __slots__ = ("_fail", "state", "stop")

    def __init__(self, stop: str) -> None:
        self.stop = stop
        self._fail = _failure_table(stop)
        self.state = 0

    def feed(self, char: str) -> bool:
        """Advance over one output character; True when the stop string just completed."""
        stop, fail, k = self.stop, self._fail, self.state
        while k and stop[k] != char:
            k = fail[k - 1]
        if stop[k] == char:
            k += 1
        if k == len(stop):
            self.state = fail[k - 1]
            return True
        self.state = k
        return False


def _failure_table(pattern: str) -> list[int]:
    """fail[i] = length of the longest proper prefix of pattern[:i+1] that is also its suffix."""
    fail = [0] * len(pattern)
    k = 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = fail[k - 1]
        if pattern[i] == pattern[k]:
            k += 1
        fail[i] = k
    return fail


class StopStringMatcher:
    """Finds stop strings across delta boundaries and holds back text that may start one.

    `push` returns (text safe to send, stopped). Once stopped, the stop string and anything after
    it are dropped, as in vLLM without `include_stop_str_in_output`. When several stop strings end
    inside one delta, the one that starts first wins.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._automata = [_StopAutomaton(s) for s in dict.fromkeys(stops)]
        self._longest = max((len(s) for s in stops), default=0)
        self._pending = ""  # text received but not sent yet: at most the longest stop string - 1
        self._sent: list[str] = []
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the output

    def push(self, delta: str) -> tuple[str, bool]:
        if self.stopped or not delta:
            return "", self.stopped
        if not self._automata:  # the common case: nothing to search or hold back
            self._sent.append(delta)
            return delta, False
        base = len(self._pending)
        self._pending += delta
        cut = self._first_match(delta, base)
        if cut is not None:
            self.stopped = True
            return self._send(cut), True
        held = max(a.state for a in self._automata)
        return self._send(len(self._pending) - held), False

    def flush(self) -> str:
        """Text held back when generation ended for another reason."""
        return self._send(len(self._pending))

    @property
    def text(self) -> str:
        """All output text sent so far (the stop string excluded)."""
        return "".join(self._sent)

    def _first_match(self, delta: str, base: int) -> int | None:
        """Feed `delta` (which starts at `base` in the pending text); the start of the earliest stop
        string completed in it (on a tie, the one listed first, as vLLM picks), or None."""
        best: tuple[int, int] | None = None  # (start, index in the stop list)
        for i, char in enumerate(delta, base + 1):
            for index, automaton in enumerate(self._automata):
                if automaton.feed(char):
                    found = (i - len(automaton.stop), index)
                    best = found if best is None else min(best, found)
            if best is not None and i - best[0] >= self._longest:
                break  # no stop string still open can start at or before the match
        if best is None:
            return None
        self.matched = self._automata[best[1]].stop
        return best[0]

    def _send(self, end: int) -> str:
        """Release pending[:end]; after a stop, everything pending beyond it is dropped."""
        out, self._pending = self._pending[:end], ("" if self.stopped else self._pending[end:])
        if out:
            self._sent.append(out)
        return out
