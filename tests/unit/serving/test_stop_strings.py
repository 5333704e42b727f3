"""The incremental stop-string matcher agrees with a whole-text search, and its state stays bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dpserve.serving.stop_strings import StopStringMatcher


def reference(stops: list[str], deltas: list[str]) -> tuple[str, str | None]:
    """Search the whole text after each delta for a stop ending inside that delta; earliest start wins."""
    text = ""
    for delta in deltas:
        new_from = len(text)
        text += delta
        hits = []
        for stop in stops:
            i = text.find(stop, max(0, new_from - len(stop) + 1))
            if i != -1:
                hits.append((i, stop))
        if hits:
            cut, stop = min(hits, key=lambda hit: hit[0])
            return text[:cut], stop
    return text, None


def run(stops: list[str], deltas: list[str]) -> tuple[str, str | None, int]:
    matcher = StopStringMatcher(stops)
    out, most_pending = "", 0
    for delta in deltas:
        text, stopped = matcher.push(delta)
        out += text
        most_pending = max(most_pending, len(matcher._pending))
        if stopped:
            return out, matcher.matched, most_pending
    return out + matcher.flush(), None, most_pending


@settings(max_examples=300, derandomize=True, database=None)
@given(stops=st.lists(st.text("abc", min_size=1, max_size=5), min_size=1, max_size=4),
       deltas=st.lists(st.text("abc", max_size=6), max_size=12))
def test_matches_a_whole_text_search(stops: list[str], deltas: list[str]) -> None:
    out, matched, most_pending = run(stops, deltas)
    assert (out, matched) == reference(stops, deltas)
    # what is held back never exceeds what may still start a stop string (plus the last delta)
    assert most_pending <= max(map(len, stops)) - 1 + max(map(len, deltas), default=0)


def test_work_per_character_does_not_grow_with_the_output() -> None:
    stops = ["x" * 1000 + "y", "z" * 1024]  # long, self-overlapping: the old search was O(L²) a token
    matcher = StopStringMatcher(stops)
    for _ in range(2000):
        _, stopped = matcher.push("xxxx")
        assert not stopped and len(matcher._pending) <= 1024
    assert matcher.push("y") == ("", True) and matcher.matched == stops[0]
