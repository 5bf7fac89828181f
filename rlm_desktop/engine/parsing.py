"""Reading a root model's reply: ```repl / ```python code blocks and the textual FINAL(...) forms."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

_CODE_LANGS = {"repl", "python", "py", "python3"}
_OPEN = re.compile(r"^\s*```+\s*([A-Za-z0-9_+-]*)\s*(.*)$")
_FINAL_START = re.compile(r"^[ \t>*_#-]*(FINAL_VAR|FINAL)\s*\(", re.MULTILINE)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class TextualFinal:
    """A ``FINAL(...)`` / ``FINAL_VAR(...)`` written outside code."""

    via: str            # "FINAL" | "FINAL_VAR"
    value: str          # FINAL: the answer text; FINAL_VAR: the variable name
    raw: str            # the argument as written


@dataclass(frozen=True, slots=True)
class ParsedReply:
    code_blocks: list[str] = field(default_factory=list)
    final: TextualFinal | None = None
    prose: str = ""     # the text outside every fenced block
    last_unclosed: bool = False   # the last code block had no closing fence (reply cut short?)

    @property
    def has_code(self) -> bool:
        return bool(self.code_blocks)


def parse_reply(text: str) -> ParsedReply:
    """Split a reply into runnable code blocks and the prose around them, and find a textual final.

    Only ```repl / ```python (```py) fences are code; other fences are neither code nor final text.
    A closing fence at the end of the last code line is tolerated, and so is a final block the model
    left unclosed. The textual final is looked for in the prose only, at the start of a line.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    blocks: list[str] = []
    prose: list[str] = []
    unclosed = False
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        m = _OPEN.match(line)
        if not m:
            prose.append(line)
            i += 1
            continue
        lang = m.group(1).lower()
        rest = m.group(2)
        is_code = lang in _CODE_LANGS
        # One-line block: ```repl print(1)```
        if rest.rstrip().endswith("```") and rest.strip() != "```":
            body = rest.rstrip()[:-3].rstrip("`").rstrip()
            if is_code and body.strip():
                blocks.append(body)
            i += 1
            continue
        if not lang and rest.strip():
            prose.append(line)   # ``` followed by text: not a fence we understand
            i += 1
            continue
        body_lines: list[str] = []
        if rest.strip():
            body_lines.append(rest)
        i += 1
        closed = False
        while i < n:
            cur = lines[i]
            stripped = cur.strip()
            if stripped.startswith("```") and stripped.strip("`").strip() == "":
                i += 1
                closed = True
                break
            if stripped.endswith("```") and not stripped.startswith("```"):
                body_lines.append(cur.rstrip()[:-3].rstrip("`").rstrip())
                i += 1
                closed = True
                break
            body_lines.append(cur)
            i += 1
        if is_code:
            body = "\n".join(body_lines).strip("\n")
            if body.strip():
                blocks.append(body)
                unclosed = not closed
    prose_text = "\n".join(prose)
    return ParsedReply(blocks, find_textual_final(prose_text), prose_text, unclosed)


def find_textual_final(text: str) -> TextualFinal | None:
    """The first ``FINAL(...)`` / ``FINAL_VAR(...)`` at the start of a line, parentheses balanced.

    The argument may span lines, contain nested calls and quoted strings with parentheses. An
    argument that is a Python string literal is unquoted; anything else is taken as written.
    """
    for m in _FINAL_START.finditer(text):
        open_at = m.end() - 1
        close_at = _matching_paren(text, open_at)
        if close_at is None:   # a stray quote in prose (the users' files): count parentheses only
            close_at = _matching_paren(text, open_at, strings=False)
        if close_at is None:
            continue
        raw = text[open_at + 1:close_at].strip()
        via = m.group(1)
        if via == "FINAL_VAR":
            name = _unquote(raw).strip()
            if not _IDENT.match(name):
                continue
            return TextualFinal("FINAL_VAR", name, raw)
        return TextualFinal("FINAL", _unquote(raw), raw)
    return None


def _unquote(raw: str) -> str:
    if raw[:1] in {"'", '"'} or raw[:2].lower() in {"f'", 'f"', "r'", 'r"'} or raw[:3] in {'"""', "'''"}:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
        if isinstance(value, str):
            return value
    return raw


def _matching_paren(text: str, open_at: int, *, strings: bool = True) -> int | None:
    """Index of the ``)`` closing the ``(`` at ``open_at``; strings and escapes respected."""
    depth = 0
    i = open_at
    n = len(text)
    quote: str | None = None
    while i < n:
        c = text[i]
        if quote is not None:
            if c == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
            if len(quote) == 1 and c == "\n":
                quote = None   # an unterminated short string ends at the line (prose apostrophes)
            i += 1
            continue
        if strings and c in "\"'":
            triple = text[i:i + 3]
            if triple in ('"""', "'''"):
                quote = triple
                i += 3
                continue
            # An apostrophe inside a word (don't, it's) is prose, not a string.
            if c == "'" and i > 0 and text[i - 1].isalnum() and i + 1 < n and text[i + 1].isalnum():
                i += 1
                continue
            quote = c
            i += 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None
