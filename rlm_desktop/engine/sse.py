"""Server-sent events from a response body's bytes, decoded the way the openai SDK decodes them."""

# providers.py reads a streamed chat completion through the SDK's raw-response API and decodes the
# events here, working on plain dicts: the SDK's own stream builds a pydantic chunk per event and
# runs its byte decoder through several generator layers, about half the CPU of a local call.
#
# The rules are the SSE spec's (https://html.spec.whatwg.org/multipage/server-sent-events.html,
# "interpreting an event stream"), as the SDK's SSEDecoder (openai/_streaming.py) applies them:
# lines end in CRLF, LF or CR (a CRLF split between two reads is one line end); a line starting
# with ":" is a comment; "field: value" loses one space after the colon; a line without a colon is
# a field with an empty value; data lines of one event are joined with "\n"; a blank line
# dispatches the event; a pending event at the end of the body is dropped; every field but
# ``data`` is ignored (event names, ids and retry times mean nothing to a chat completion). Each
# line must be UTF-8 (the SDK decodes line by line, strictly, as it goes): the first line that is
# not ends the decoding, after the events before it.
# Two points follow the spec where the SDK does not: an event is dispatched only when it has data
# (the SDK also dispatches one with only an ``event:``, ``id:`` or ``retry:`` field, and, as it
# never resets the last id, one at every blank line after an ``id:`` field, so a server that sends
# ids and ``: ping`` keep-alives failed every reply on a data-less "event"); a leading byte-order
# mark is skipped.

from __future__ import annotations

_CR = 13


class EventDecoder:
    """Feed body bytes in any pieces; get the data of each dispatched event, in order.

    ``done`` turns True at a data line whose value starts with ``[DONE]`` (the stream's
    terminator), whether or not its event is ever dispatched (a server that closes right after
    ``data: [DONE]`` without the blank line still ended its stream). ``error`` is set at the first
    line that is not UTF-8: :meth:`feed` returns the events before it, and nothing from then on
    (a caller that stops at an earlier ``[DONE]`` never sees it, as with the SDK)."""

    __slots__ = ("_pending", "_skip_lf", "_data", "_start", "done", "error")

    def __init__(self) -> None:
        self._pending = bytearray()   # the current line, not yet ended
        self._skip_lf = False         # the last piece ended in CR: a LF first in the next is its CRLF
        self._data: list[str] = []
        self._start = True            # at the start of the body (for the byte-order mark)
        self.done = False
        self.error: UnicodeDecodeError | None = None

    def feed(self, piece: bytes) -> list[str]:
        """The data of the events this piece completes."""
        if self.error is not None:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if piece[:1] == b"\n":
                piece = piece[1:]
        end = max(piece.rfind(b"\n"), piece.rfind(b"\r"))
        if end < 0:
            self._pending += piece          # amortised: a line that never ends grows in place
            return []
        if self._pending:
            self._pending += piece[:end + 1]
            block = bytes(self._pending)
            self._pending.clear()
        else:
            block = piece[:end + 1]
        if end + 1 < len(piece):
            self._pending += piece[end + 1:]
        elif piece[end] == _CR:
            self._skip_lf = True
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._start:
            self._start = False
            if block.startswith(b"\xef\xbb\xbf"):
                block = block[3:]
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            return self._lines_until_bad(block)
        out: list[str] = []
        self._lines(text.split("\n")[:-1], out)
        return out

    def finish(self) -> None:
        """The end of the body: a last line without its line end can still be ``data: [DONE]``;
        a pending event is dropped (the spec and the SDK)."""
        if self.error is not None:
            return
        line = bytes(self._pending)
        self._pending.clear()
        if line.startswith(b"data:") and line[5:].removeprefix(b" ").startswith(b"[DONE]"):
            self.done = True

    def _lines_until_bad(self, block: bytes) -> list[str]:
        """Line by line up to the first that is not UTF-8 (which sets ``error``)."""
        out: list[str] = []
        for raw in block.split(b"\n")[:-1]:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.error = exc
                break
            self._lines([line], out)
        return out

    def _lines(self, lines: list[str], out: list[str]) -> None:
        data = self._data
        for line in lines:
            if line.startswith("data: "):          # nearly every line a chat stream sends
                value = line[6:]
            elif not line:
                if data:
                    out.append("\n".join(data))
                    data.clear()
                continue
            elif line.startswith("data"):
                # "data:x" or "data" (with a space after the colon it took the first branch)
                name, _, value = line.partition(":")
                if name != "data":
                    continue                        # e.g. "dataset: x": another field
            else:
                continue                            # a comment, or a field other than data
            if value.startswith("[DONE]"):
                self.done = True
            data.append(value)
