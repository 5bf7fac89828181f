"""A Qt-free reader and writer of the INI files that ``QSettings`` (IniFormat) writes, so the CLI
and Python read and change the same preferences file as the desktop app without importing Qt.

It covers what the preferences use: string, number and boolean values (strings escaped and quoted
exactly as QSettings does: ``\\"``, ``\\\\``, ``\\n``, ``\\xHH``, quotes around ``;`` ``,`` ``=`` and
edge spaces, ``@`` doubled), keys with ``/`` groups (first part = section, the rest joined by
``\\``; other characters percent-encoded), top-level keys under ``[General]``. Values come back as
strings, as QSettings gives them from an INI file in a new process. Writes are atomic (a temporary
file moved into place) after re-reading the file, so changes made meanwhile by the app are kept.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from rlm_desktop.core.paths import write_text_atomic

_KEY_SAFE = re.compile(r"[A-Za-z0-9_.\-]")
_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
            '"': '\\"', "\\": "\\\\"}
_UNESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              '"': '"', "'": "'", "?": "?", "\\": "\\"}
_HEX = set("0123456789abcdefABCDEF")


def escape_key(key: str) -> str:
    out = []
    for ch in key:
        if _KEY_SAFE.match(ch):
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"%{ord(ch):02X}")
        else:
            out.append(f"%U{ord(ch):04X}")
    return "".join(out)


def unescape_key(key: str) -> str:
    out, i = [], 0
    while i < len(key):
        ch = key[i]
        if ch == "%" and key[i + 1:i + 2] == "U" and len(key) >= i + 6:
            try:
                out.append(chr(int(key[i + 2:i + 6], 16)))
                i += 6
                continue
            except ValueError:
                pass
        if ch == "%" and len(key) >= i + 3:
            try:
                out.append(chr(int(key[i + 1:i + 3], 16)))
                i += 3
                continue
            except ValueError:
                pass
        out.append(ch)
        i += 1
    return "".join(out)


def escape_value(value: Any) -> str:
    """A value as QSettings writes it in an INI file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    s = str(value)
    if s.startswith("@"):
        s = "@" + s
    out: list[str] = []
    needs_quotes = False
    escape_next_if_hex = False
    for ch in s:
        if ch in ";,=":
            needs_quotes = True
        if escape_next_if_hex and ch in _HEX:
            out.append(f"\\x{ord(ch):x}")
            continue
        escape_next_if_hex = False
        if ch == "\0":
            out.append("\\0")
            escape_next_if_hex = True
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) <= 0x1F or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):x}")
            escape_next_if_hex = True
        else:
            out.append(ch)
    text = "".join(out)
    if needs_quotes or (text and (text[0] == " " or text[-1] == " ")):
        text = f'"{text}"'
    return text


def unescape_value(raw: str) -> Any:
    """An INI value as QSettings reads it: a string, or a list when unquoted commas separate parts."""
    parts: list[str] = []
    cur: list[str] = []
    in_quotes = False
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        if ch == '"':
            in_quotes = not in_quotes
            i += 1
            continue
        if ch == "\\" and i + 1 < n:
            nxt = raw[i + 1]
            if nxt in _UNESCAPES:
                cur.append(_UNESCAPES[nxt])
                i += 2
                continue
            if nxt == "x":
                j = i + 2
                while j < n and raw[j] in _HEX:
                    j += 1
                cur.append(chr(int(raw[i + 2:j] or "0", 16)))
                i = j
                continue
            if nxt in "01234567":
                j = i + 1
                while j < n and j < i + 4 and raw[j] in "01234567":
                    j += 1
                cur.append(chr(int(raw[i + 1:j], 8)))
                i = j
                continue
            i += 1            # an unknown escape: the character itself
            continue
        if ch == "," and not in_quotes:
            parts.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    last = "".join(cur)
    if parts:
        parts.append(last.strip())
        return [_at(p) for p in parts]
    return _at(last)


def _at(s: str) -> Any:
    if s.startswith("@@"):
        return s[1:]
    if s.startswith("@String(") and s.endswith(")"):     # QSettings' form for text with NUL in it
        return s[len("@String("):-1]
    if s == "@Invalid()":
        return None
    return s


class IniStore:
    """Key/value access to a QSettings INI file (keys like ``group/sub/key``). Not thread-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._values: dict[str, Any] = {}
        self._changed: dict[str, Any] = {}      # key -> value, or _REMOVED
        self.error: str | None = None
        self._values = self._read()

    # -- file ------------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            self.error = f"the preferences file {self.path} cannot be read ({exc})"
            return {}
        values: dict[str, Any] = {}
        section = ""
        for line in text.splitlines():
            s = line.strip()
            if not s or s.startswith(";") or s.startswith("#"):
                continue
            if s.startswith("[") and s.endswith("]"):
                name = unescape_key(s[1:-1].strip())
                section = "" if name == "General" else name
                continue
            if "=" not in line:
                continue
            k, _, v = line.partition("=")
            key = unescape_key(k.strip()).replace("\\", "/")
            values[f"{section}/{key}" if section else key] = unescape_value(v.strip())
        return values

    def _render(self, values: dict[str, Any]) -> str:
        sections: dict[str, list[tuple[str, Any]]] = {}
        for key in sorted(values):
            sec, _, rest = key.partition("/")
            if not rest:
                sec, rest = "General", key
            sections.setdefault(sec, []).append((rest, values[key]))
        out: list[str] = []
        order = (["General"] if "General" in sections else []) + sorted(s for s in sections if s != "General")
        for sec in order:
            out.append(f"[{escape_key(sec)}]")
            for rest, value in sections[sec]:
                k = "\\".join(escape_key(p) for p in rest.split("/"))
                v = ", ".join(escape_value(x) for x in value) if isinstance(value, list) else escape_value(value)
                out.append(f"{k}={v}")
            out.append("")
        return "\n".join(out)

    # -- QSettings-like API ----------------------------------------------------------------------
    def value(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def contains(self, key: str) -> bool:
        return key in self._values

    def set_value(self, key: str, value: Any) -> None:
        self._values[key] = value
        self._changed[key] = value

    def remove(self, key: str) -> None:
        """Remove ``key`` and every key below it (``key/…``), as QSettings does."""
        for k in [k for k in self._values if k == key or k.startswith(key + "/")]:
            del self._values[k]
            self._changed[k] = _REMOVED

    def child_keys(self, group: str) -> list[str]:
        prefix = group + "/"
        return [k[len(prefix):] for k in self._values if k.startswith(prefix) and "/" not in k[len(prefix):]]

    def sync(self) -> None:
        """Write the changes (over what the file holds now, so others' changes are kept). Raises
        OSError when the file cannot be written."""
        if not self._changed:
            self._values = self._read()        # pick up what the app wrote meanwhile
            return
        current = self._read()
        for k, v in self._changed.items():
            if v is _REMOVED:
                current.pop(k, None)
            else:
                current[k] = v
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_text_atomic(self.path, self._render(current))
        self._changed.clear()
        self._values = current


_REMOVED = object()
