"""SSE parsing: events split across chunks, batched, CRLF, multi-line data, comments."""

from __future__ import annotations

from dpserve.bench.sse import DONE, SSEParser

STREAM = b'data: {"a": 1}\n\ndata: {"b": 2}\n\n: keep-alive\n\ndata: [DONE]\n\n'


def test_whole_stream_in_one_chunk() -> None:
    assert SSEParser().feed(STREAM) == ['{"a": 1}', '{"b": 2}', DONE]


def test_byte_by_byte_gives_the_same_events() -> None:
    parser = SSEParser()
    events = [e for i in range(len(STREAM)) for e in parser.feed(STREAM[i:i + 1])]
    assert events == ['{"a": 1}', '{"b": 2}', DONE]


def test_event_completes_only_at_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a": 1}\n') == []
    assert parser.feed(b"\n") == ['{"a": 1}']


def test_crlf_multiline_and_other_fields() -> None:
    raw = b"event: message\r\nid: 4\r\ndata: line1\r\ndata:line2\r\n\r\n"
    assert SSEParser().feed(raw) == ["line1\nline2"]


def test_close_flushes_unterminated_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: tail") == []
    assert parser.close() == ["tail"]
    assert parser.close() == []


def test_utf8_split_across_chunks() -> None:
    raw = 'data: "héllo"\n\n'.encode()
    cut = raw.index(b"\xc3") + 1
    parser = SSEParser()
    assert parser.feed(raw[:cut]) + parser.feed(raw[cut:]) == ['"héllo"']
