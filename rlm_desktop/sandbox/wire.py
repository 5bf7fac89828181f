"""Worker side of the wire format, importable in a fraction of a millisecond (no json/re/typing).

Frames are a 4-byte big-endian length then a body. Host → worker bodies are ``marshal`` data
(the host is trusted and uses the same interpreter); worker → host bodies are UTF-8 JSON made
here with the C string encoder, so the host parses untrusted frames with plain ``json.loads``.
"""

from __future__ import annotations

import marshal
import os
from _json import encode_basestring as _enc_str

# Largest worker → host frame the host accepts (16 MiB): room for a big llm_query prompt; anything
# bigger is a protocol violation (the worker refuses to send it in the first place).
MAX_WORKER_FRAME = 16 * 1024 * 1024

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def dumps(obj: Any) -> str:
    """JSON text for dicts/lists/str/int/float/bool/None (keys must be str)."""
    parts: list[str] = []
    _enc(obj, parts.append)
    return "".join(parts)


def _enc(o: Any, w: Any) -> None:
    if o is None:
        w("null")
    elif o is True:
        w("true")
    elif o is False:
        w("false")
    elif isinstance(o, str):
        w(_enc_str(o))
    elif isinstance(o, int):
        w(int.__repr__(o))
    elif isinstance(o, float):
        w(float.__repr__(o) if o == o and o not in (float("inf"), float("-inf")) else "null")
    elif isinstance(o, dict):
        w("{")
        first = True
        for k, v in o.items():
            if not isinstance(k, str):
                raise TypeError(f"JSON object keys must be str, not {type(k).__name__}")
            if not first:
                w(",")
            first = False
            w(_enc_str(k))
            w(":")
            _enc(v, w)
        w("}")
    elif isinstance(o, list | tuple):
        w("[")
        for i, v in enumerate(o):
            if i:
                w(",")
            _enc(v, w)
        w("]")
    else:
        raise TypeError(f"cannot send a {type(o).__name__} to the host")


def encode_json_frame(msg: dict[str, Any]) -> bytes:
    body = dumps(msg).encode("utf-8", "surrogatepass")
    return len(body).to_bytes(4, "big") + body


def encode_marshal_frame(msg: dict[str, Any]) -> bytes:
    body = marshal.dumps(msg)
    return len(body).to_bytes(4, "big") + body


class MarshalReader:
    """Reads host frames from a blocking fd; returns None at EOF."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()

    def _fill(self, need: int) -> bool:
        while len(self.buf) < need:
            try:
                chunk = os.read(self.fd, max(need - len(self.buf), 1 << 16))
            except BlockingIOError:          # model code made the pipe non-blocking: wait
                import select

                select.select([self.fd], [], [])
                continue
            if not chunk:
                return False
            self.buf += chunk
        return True

    def _read_exact(self, size: int) -> bytearray | None:
        """The body of the frame whose header is buffered: what is buffered, then the rest read
        from the pipe into place (nothing past the frame is read). None at EOF."""
        body = bytearray(size)
        have = len(self.buf) - 4
        body[:have] = self.buf[4:]
        self.buf.clear()
        view = memoryview(body)
        try:
            while have < size:
                try:
                    n = os.readv(self.fd, [view[have:]])
                except BlockingIOError:
                    import select

                    select.select([self.fd], [], [])
                    continue
                if not n:
                    return None
                have += n
        finally:
            view.release()
        return body

    def has_frame(self) -> bool:
        """A whole frame is already buffered (so no need to wait for the pipe)."""
        return len(self.buf) >= 4 and len(self.buf) >= 4 + int.from_bytes(self.buf[:4], "big")

    def read(self) -> dict[str, Any] | None:
        if not self._fill(4):
            return None
        size = int.from_bytes(self.buf[:4], "big")
        if len(self.buf) >= 4 + size or size < 1 << 16:
            if not self._fill(4 + size):
                return None
            body: bytes | bytearray = bytes(self.buf[4:4 + size])
            del self.buf[:4 + size]
        else:
            # A big frame (the documents of ``context``): read it straight into a buffer of its
            # exact size, so it exists once in memory (not grown chunk by chunk, not copied again).
            body = self._read_exact(size)
            if body is None:
                return None
        msg = marshal.loads(body)
        del body
        if not isinstance(msg, dict):
            raise ValueError("host frame is not a dict")
        return msg
