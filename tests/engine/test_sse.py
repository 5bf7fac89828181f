"""The server-sent events decoder (engine/sse.py) that replaced the openai SDK's stream reading.

Each case is checked against the SSE spec's rules as written out here, and, as an independent
oracle, against the SDK's own SSEDecoder (openai/_streaming.py) fed the same bytes: the engine
must read every stream as the SDK did, however the bytes are split between reads — except where
the SDK departs from the spec (data-less events), marked below.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from openai._streaming import SSEDecoder

from rlm_desktop.engine.sse import EventDecoder

# (name, body, the data of the events it dispatches)
CASES: list[tuple[str, bytes, list[str]]] = [
    ("plain", b'data: {"a": 1}\n\ndata: {"a": 2}\n\n', ['{"a": 1}', '{"a": 2}']),
    ("no space after the colon", b"data:{}\n\ndata:  two spaces\n\n", ["{}", " two spaces"]),
    ("CRLF line ends", b"data: one\r\n\r\ndata: two\r\n\r\n", ["one", "two"]),
    ("CR line ends", b"data: one\r\rdata: two\r\r", ["one", "two"]),
    ("mixed line ends", b"data: a\r\n\ndata: b\n\r\ndata: c\r\r\n", ["a", "b", "c"]),
    ("comments", b": keep-alive\n\n:\ndata: x\n: between\n\n", ["x"]),
    ("multi-line data", b"data: {\"a\":\ndata:  1}\ndata\n\n", ['{"a":\n 1}\n']),
    ("event and retry fields", b"event: message\nretry: 1000\ndata: x\n\nevent: ping\ndata: y\n\n",
     ["x", "y"]),
    ("unknown fields and lines without a colon", b"foo: bar\nlorem ipsum\ndata: x\n\n", ["x"]),
    ("an empty data line is an event with empty data", b"data:\n\ndata\n\n", ["", ""]),
    ("a field that only starts like data", b"dataset: 1\ndata: x\n\n", ["x"]),
    ("blank lines alone dispatch nothing", b"\n\n\r\n\n", []),
    ("the pending event at the end is dropped", b"data: x\n\ndata: y\n", ["x"]),
    ("UTF-8 text", 'data: {"c": "héllo wörld 🙂 naïve"}\n\n'.encode(),
     ['{"c": "héllo wörld 🙂 naïve"}']),
    ("the terminator", b"data: x\n\ndata: [DONE]\n\n", ["x", "[DONE]"]),
]

# The spec dispatches an event only when it has data; the SDK also dispatched one with data ""
# for an event:/id:/retry: field alone, and at every blank line after an id: (it never resets the
# last id). Servers that send ids and ": ping" keep-alives then failed every reply.
SPEC_NOT_SDK: list[tuple[str, bytes, list[str], list[str]]] = [
    ("an event without data", b"event: ping\n\ndata: x\n\n", ["x"], ["", "x"]),
    ("retry alone", b"retry: 100\n\ndata: x\n\n", ["x"], ["", "x"]),
    ("ids and keep-alive comments", b"id: 1\ndata: x\n\n: ping\n\nid: 2\ndata: y\n\n",
     ["x", "y"], ["x", "", "y"]),
]


def _ours(body: bytes, cuts: list[int]) -> tuple[list[str], EventDecoder]:
    dec = EventDecoder()
    out: list[str] = []
    edges = [0, *cuts, len(body)]
    for a, b in zip(edges, edges[1:], strict=False):
        out += dec.feed(body[a:b])
    dec.finish()
    return out, dec


def _sdk(body: bytes, cuts: list[int]) -> list[str]:
    edges = [0, *cuts, len(body)]

    async def pieces() -> AsyncIterator[bytes]:
        for a, b in zip(edges, edges[1:], strict=False):
            yield body[a:b]

    async def go() -> list[str]:
        return [sse.data async for sse in SSEDecoder().aiter_bytes(pieces())]
    return asyncio.run(go())


@pytest.mark.parametrize(("body", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_events_as_the_spec_and_the_sdk_read_them(body: bytes, expected: list[str]) -> None:
    assert _ours(body, [])[0] == expected
    assert _sdk(body, []) == expected


@pytest.mark.parametrize(("body", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_any_split_between_reads_gives_the_same_events(body: bytes, expected: list[str]) -> None:
    # every single cut (mid-line, mid-CRLF, mid-UTF-8 character), every two cuts, one byte per read
    splits = [[i] for i in range(1, len(body))]
    splits += [[i, j] for i in range(1, len(body)) for j in range(i + 1, len(body))][::7]
    splits.append(list(range(1, len(body))))
    for cuts in splits:
        assert _ours(body, cuts)[0] == expected, cuts
    assert _sdk(body, list(range(1, len(body)))) == expected


@pytest.mark.parametrize(("body", "spec", "sdk"), [c[1:] for c in SPEC_NOT_SDK],
                         ids=[c[0] for c in SPEC_NOT_SDK])
def test_an_event_without_data_is_not_dispatched(body: bytes, spec: list[str], sdk: list[str]) -> None:
    for cuts in [[]] + [[i] for i in range(1, len(body))]:
        assert _ours(body, cuts)[0] == spec, cuts
    assert _sdk(body, []) == sdk          # where the SDK departed from the spec


def test_a_crlf_split_between_two_reads_is_one_line_end() -> None:
    # "a\r" | "\ndata: b\r\n\r\n": one event "a\nb"; reading the LF as a blank line would dispatch
    # "a" alone and then "b"
    assert _ours(b"data: a\r\ndata: b\r\n\r\n", [8])[0] == ["a\nb"]
    assert _sdk(b"data: a\r\ndata: b\r\n\r\n", [8]) == ["a\nb"]


@pytest.mark.parametrize("tail", [b"data: [DONE]\n\n", b"data:[DONE]\n\n", b"data: [DONE]\n",
                                  b"data: [DONE]", b"data:[DONE] extra"])
def test_done_is_seen_with_or_without_the_events_end(tail: bytes) -> None:
    body = b"data: x\n\n" + tail
    for cuts in ([], [len(body) - 3], list(range(1, len(body)))):
        _, dec = _ours(body, cuts)
        assert dec.done, (tail, cuts)


@pytest.mark.parametrize("body", [b"data: x\n\n", b"data:  [DONE]\n\n", b"data: x [DONE]\n\n",
                                  b": data: [DONE]\n\n", b"event: [DONE]\n\n"])
def test_done_is_only_a_data_line_starting_with_it(body: bytes) -> None:
    assert not _ours(body, [])[1].done


def test_a_line_that_is_not_utf8_ends_the_decoding_after_the_events_before_it() -> None:
    body = b"data: good\n\ndata: two\n\ndata: \xff\xfe bad\n\ndata: never\n\n"
    for cuts in ([], [12], [3, 25]):
        dec = EventDecoder()
        got = []
        edges = [0, *cuts, len(body)]
        for a, b in zip(edges, edges[1:], strict=False):
            got += dec.feed(body[a:b])
        assert got == ["good", "two"] and isinstance(dec.error, UnicodeDecodeError), cuts
        assert dec.feed(b"data: later\n\n") == []
    # the SDK gives the same events, then raises at the same line
    got = []

    async def sdk() -> None:
        async def one() -> AsyncIterator[bytes]:
            yield body
        async for sse in SSEDecoder().aiter_bytes(one()):
            got.append(sse.data)
    with pytest.raises(UnicodeDecodeError):
        asyncio.run(sdk())
    assert got == ["good", "two"]


def test_a_byte_order_mark_at_the_start_is_skipped() -> None:
    body = b"\xef\xbb\xbfdata: x\n\n"
    for cuts in ([], [1], [3], [5]):
        assert _ours(body, cuts)[0] == ["x"], cuts


def test_a_line_that_never_ends_is_kept_whole_until_it_does() -> None:
    dec = EventDecoder()
    assert dec.feed(b"data: ") == []
    for _ in range(1000):
        assert dec.feed(b"a" * 100) == []
    assert dec.feed(b"\n\n") == ["a" * 100_000]
