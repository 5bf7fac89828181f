"""Text from outside (a server's error, a model's answer, a file name) made safe for a terminal.

A terminal acts on control characters: ``ESC ] 0 ; … BEL`` retitles the window, ``ESC [ 2 J``
clears it, C1 controls (``\\x9b`` is a one-character CSI) do the same, and bidi overrides
(U+202E) make text read differently from what it is. Everything the CLI prints passes through
:func:`for_terminal`, which shows such characters as visible escapes (``\\x1b``, ``\\u202e``) and
keeps newlines and tabs. ``--json`` output stays exact: :func:`json_for_terminal` writes the same
characters as JSON escapes, which decode to the very same string. Qt-free, no I/O.
"""

from __future__ import annotations

import re
from typing import IO

# C0 controls but tab and newline, DEL, C1 controls, the bidi embeddings/overrides/isolates and
# marks (Trojan Source), line/paragraph separators, and lone surrogates (an undecodable file name:
# also unprintable to a UTF-8 stream).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                     "\u2066-\u2069\ud800-\udfff]")
# Inside JSON text C0 controls are already escaped by json.dumps; the rest may still be raw.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")

_SURROGATE = re.compile("[\ud800-\udfff]")


def _visible(m: re.Match[str]) -> str:
    o = ord(m.group(0))
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def for_terminal(text: str) -> str:
    """``text`` with every character a terminal would act on shown as a visible escape
    (``\\x1b``, ``\\x9b``, ``\\u202e``); newlines and tabs kept (``\\r\\n`` becomes ``\\n``)."""
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    return _UNSAFE.sub(_visible, text)


def json_for_terminal(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with the characters a terminal would
    act on written as ``\\uXXXX`` escapes: the same JSON value, safe to print anywhere."""
    if text.isascii() and "\x7f" not in text:   # the usual case, checked at memory speed
        return text
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # a replaced or closed stream
        return False


def for_stream(text: str, stream: IO[str]) -> str:
    """``text`` neutralised when ``stream`` is a terminal, exact otherwise (a pipe or a file: a
    script may want the bytes) — but for lone surrogates, which no UTF-8 stream can carry."""
    if is_terminal(stream):
        return for_terminal(text)
    return _SURROGATE.sub(_visible, text)


__all__ = ["for_stream", "for_terminal", "is_terminal", "json_for_terminal"]
