"""Host side of the wire format: frames are a 4-byte big-endian length, then a body.

Worker → host: UTF-8 JSON (untrusted: size-capped, parsed with ``json.loads``, type-checked).
Host → worker: ``marshal`` (trusted direction; see :mod:`rlm_desktop.sandbox.wire`, the worker's
half, which avoids importing json so the worker starts fast).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from rlm_desktop.sandbox.wire import MAX_WORKER_FRAME, encode_marshal_frame

HEADER = struct.Struct(">I")
# Worker → host frames: what untrusted code can make the worker (or itself) send. Anything
# bigger is a protocol violation and the worker is killed.
MAX_FRAME_FROM_WORKER = MAX_WORKER_FRAME
# Frame types ("t" field). The host sends "init", "run", "resp" and "shutdown".
WORKER_TYPES = frozenset({"spawned", "ready", "fatal", "out", "req", "done"})


class ProtocolError(ValueError):
    """A frame was oversized, not JSON, not an object, or of an unknown type."""


def encode(msg: dict[str, Any]) -> bytes:
    """A worker → host frame (JSON), as the worker would send it (tests and tools use this)."""
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return HEADER.pack(len(body)) + body


encode_host_frame = encode_marshal_frame


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole validated frames back."""

    __slots__ = ("_buf", "_max", "_types")

    def __init__(self, max_frame: int, types: frozenset[str]) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._types = types

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        buf = self._buf
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > self._max:
                raise ProtocolError(f"frame of {size} bytes exceeds the {self._max}-byte cap")
            if n - pos - 4 < size:
                break
            body = bytes(buf[pos + 4:pos + 4 + size])
            pos += 4 + size
            out.append(self._parse(body))
        if pos:
            del buf[:pos]
        return out

    def _parse(self, body: bytes) -> dict[str, Any]:
        try:
            msg = json.loads(body.decode("utf-8", "surrogatepass"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"frame is not valid JSON ({exc.__class__.__name__})") from None
        if not isinstance(msg, dict):
            raise ProtocolError("frame is not a JSON object")
        t = msg.get("t")
        if t not in self._types:
            raise ProtocolError(f"unknown frame type {str(t)[:40]!r}")
        return msg


def clean_text(value: object, limit: int | None = None) -> str:
    """A str safe to pass on (valid UTF-8: lone surrogates replaced), optionally cut to ``limit``."""
    if not isinstance(value, str):
        raise ProtocolError(f"expected text, got {type(value).__name__}")
    if limit is not None and len(value) > limit:
        value = value[:limit]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value
