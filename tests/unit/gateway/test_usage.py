"""Stream usage for quotas: the usage event when present, else one token per text event."""

from __future__ import annotations

import pytest

from dpserve.gateway.usage import StreamTail, Usage, content_events

# As vLLM and our replicas write them (compact JSON).
ROLE = b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
TOKEN = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null}]}\n\n'
FINISH = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
TEXT = b'data: {"id":"c","choices":[{"index":0,"text":" a","logprobs":null,"finish_reason":null}]}\n\n'
EMPTY_TEXT = b'data: {"id":"c","choices":[{"index":0,"text":"","finish_reason":"length"}]}\n\n'
USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n'
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize(("chunk", "expected"), [
    (ROLE, 0), (TOKEN, 1), (FINISH, 0), (TEXT, 1), (EMPTY_TEXT, 0), (USAGE, 0), (DONE, 0),
    (ROLE + TOKEN * 3 + FINISH, 3), (TEXT * 5 + EMPTY_TEXT, 5),
    (b'data: {"choices":[{"delta":{"content":"say \\"content\\":\\"x\\""}}]}\n\n', 1),  # quotes inside text
])
def test_text_events_are_counted_per_chunk(chunk: bytes, expected: int) -> None:
    assert content_events(chunk) == expected


def _relay(chunks: list[bytes]) -> Usage:
    tail, usage = StreamTail(), Usage()
    for c in chunks:
        tail.add(c)
    tail.usage_into(usage)
    return usage


def test_stream_without_usage_is_charged_its_text_events() -> None:
    usage = _relay([ROLE, *[TOKEN] * 40, FINISH, DONE])
    assert (usage.prompt_tokens, usage.completion_tokens) == (None, 40)  # prompt: estimated later


def test_stream_with_usage_takes_the_exact_counts() -> None:
    usage = _relay([ROLE, *[TOKEN] * 40, FINISH, USAGE, DONE])
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 3)


def test_events_split_across_chunks_are_counted_once() -> None:
    half = len(TOKEN) // 2
    usage = _relay([TEXT[:10], TEXT[10:], TOKEN[:half], TOKEN[half:], DONE])
    assert usage.completion_tokens == 2


@pytest.mark.parametrize("cut", range(1, len(ROLE + TOKEN) - 1, 3))
def test_any_cut_between_chunks_counts_the_same(cut: int) -> None:
    stream = ROLE + TOKEN + EMPTY_TEXT + TEXT
    assert _relay([stream[:cut], stream[cut:], DONE]).completion_tokens == 2


def _token(text: str) -> bytes:
    return (b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"%s"},"logprobs":null}]}\n\n'
            % text.encode())


def test_long_streams_are_counted_within_a_few_percent_however_chunks_coalesce() -> None:
    """Only the first and last chunks are searched; the middle is counted by bytes."""
    words = ["a", " the", " tokenizer", "!", " 42", " über", "\\n", " x"]
    events = [_token(words[i % len(words)]) for i in range(500)]
    one_per_chunk = _relay([ROLE, *events, FINISH, DONE]).completion_tokens
    assert one_per_chunk is not None and abs(one_per_chunk - 500) <= 10
    coalesced = [b"".join(events[i:i + 7]) for i in range(0, 500, 7)]  # as TCP may deliver them
    counted = _relay([ROLE, *coalesced, FINISH, DONE]).completion_tokens
    assert counted is not None and abs(counted - 500) <= 10
    assert _relay([ROLE, *[TOKEN] * 300, FINISH, DONE]).completion_tokens == 300  # same size: exact
