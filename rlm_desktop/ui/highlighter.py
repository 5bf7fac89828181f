"""Python syntax highlighting for code views: a QSyntaxHighlighter driven by pygments, with a
per-token-type format cache (after qtconsole's pygments_highlighter)."""

from __future__ import annotations

import re

from pygments.lexer import Lexer
from pygments.lexers import PythonLexer
from pygments.styles import get_style_by_name
from pygments.token import Token, _TokenType
from PySide6.QtGui import QColor, QFont, QSyntaxHighlighter, QTextCharFormat, QTextDocument

LIGHT_STYLE = "default"
DARK_STYLE = "monokai"


def qt_length(text: str) -> int:
    """The length of ``text`` as Qt counts it, in UTF-16 code units: a character outside the Basic
    Multilingual Plane (an emoji, 𝑥) is one Python character but two Qt units. Every offset or
    length handed to ``setFormat`` goes through this (qtconsole's ``qstring_length``)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


class PygmentsHighlighter(QSyntaxHighlighter):
    """Highlights a document block by block. Multi-line strings are carried across blocks by
    re-lexing from the start of the construct (block state 1 = inside a triple-quoted string)."""

    def __init__(self, document: QTextDocument, *, dark: bool = False,
                 lexer: Lexer | None = None) -> None:
        super().__init__(document)
        self._lexer = lexer or PythonLexer(stripnl=False, ensurenl=False)
        self._formats: dict[_TokenType, QTextCharFormat | None] = {}
        self._style_name = ""
        self.set_dark(dark)

    @property
    def style_name(self) -> str:
        return self._style_name

    def set_dark(self, dark: bool) -> None:
        name = DARK_STYLE if dark else LIGHT_STYLE
        if name == self._style_name:
            return
        self._style_name = name
        self._style = get_style_by_name(name)
        self._formats.clear()
        self.rehighlight()

    def format_for(self, token: _TokenType) -> QTextCharFormat | None:
        """The cached char format of a token type (None: plain text)."""
        if token in self._formats:
            return self._formats[token]
        fmt: QTextCharFormat | None = None
        style = self._style.style_for_token(token)
        if style.get("color") or style.get("bold") or style.get("italic") or style.get("bgcolor"):
            fmt = QTextCharFormat()
            if style.get("color"):
                fmt.setForeground(QColor("#" + style["color"]))
            if style.get("bgcolor"):
                fmt.setBackground(QColor("#" + style["bgcolor"]))
            if style.get("bold"):
                fmt.setFontWeight(QFont.Weight.Bold)
            if style.get("italic"):
                fmt.setFontItalic(True)
        self._formats[token] = fmt
        return fmt

    def highlightBlock(self, text: str) -> None:  # noqa: N802 - Qt's name
        self.setCurrentBlockState(self._highlight_code(text, self.previousBlockState()))

    def _highlight_code(self, text: str, prev: int, offset: int = 0,
                        base: QTextCharFormat | None = None) -> int:
        """Format ``text`` (starting at ``offset`` in the block) as Python; returns the state to
        carry to the next block (0, or 1/2 inside a triple-quoted string). ``offset`` counts
        UTF-16 units, as Qt does."""
        if base is not None:
            self.setFormat(offset, qt_length(text), base)
        prefix = ""
        if prev > 0:
            # Inside a triple-quoted string started in an earlier block: lex with its opener.
            prefix = self._opener_for_state(prev)
        source = prefix + text
        pos = -len(prefix)           # in UTF-16 units, like every position given to Qt (the
                                     # prefix is ASCII)
        trailing: list[str] = []     # the string tokens the line ends with (pygments splits an
                                     # unterminated '"""abc' into '"""' and 'abc')
        for token, value in self._lexer.get_tokens(source):
            length = qt_length(value)
            start = max(pos, 0)
            end = pos + length
            if end > start:
                fmt = self.format_for(token)
                if fmt is not None:
                    if base is not None:
                        merged = QTextCharFormat(base)
                        merged.merge(fmt)
                        fmt = merged
                    self.setFormat(offset + start, end - start, fmt)
            pos = end
            if token in Token.Literal.String:
                trailing.append(value)
            elif value.strip():
                trailing.clear()
        tail = "".join(trailing)
        if not self._open_triple(tail):
            return 0
        first = min((tail.find(q), q) for q in ('"""', "'''") if q in tail)[1]
        return 1 if first == '"""' else 2

    @staticmethod
    def _opener_for_state(state: int) -> str:
        return '"""' if state == 1 else "'''"

    @staticmethod
    def _open_triple(value: str) -> bool:
        for q in ('"""', "'''"):
            if value.count(q) % 2 == 1:
                return True
        return False


PYTHON_FENCES = {"repl", "python", "py", "python3", ""}
IN_CODE = 10        # block state: inside a Python fence (+ the code's own state, 0..2)
IN_OTHER = 20       # block state: inside a fence of another language (shown plain, monospaced)


class ResponseHighlighter(PygmentsHighlighter):
    """A model's reply: prose stays as it is; fenced code (```` ```repl ````, ```` ```python ````)
    is monospaced and highlighted as Python, other fences monospaced; the fence lines are dimmed."""

    def __init__(self, document: QTextDocument, *, dark: bool = False,
                 reset: re.Pattern[str] | None = None) -> None:
        self._reset = reset           # lines that end any open fence (e.g. the next message's head)
        self._code_base = QTextCharFormat()
        self._code_base.setFontFamilies(["monospace"])
        self._code_base.setFontFixedPitch(True)
        self._fence = QTextCharFormat(self._code_base)
        super().__init__(document, dark=dark)

    def set_dark(self, dark: bool) -> None:
        self._fence.setForeground(QColor("#8a8a8a" if dark else "#808080"))
        super().set_dark(dark)

    def highlightBlock(self, text: str) -> None:  # noqa: N802 - Qt's name
        prev = max(self.previousBlockState(), 0)
        if self._reset is not None and self._reset.match(text):
            self.setCurrentBlockState(0)
            return
        stripped = text.strip()
        if stripped.startswith("```"):
            if prev >= IN_CODE:                  # a closing fence (anything after it is prose)
                self.setFormat(0, qt_length(text), self._fence)
                self.setCurrentBlockState(0)
            else:
                lang = stripped[3:].strip().lower()
                self.setFormat(0, qt_length(text), self._fence)
                self.setCurrentBlockState(IN_CODE if lang in PYTHON_FENCES else IN_OTHER)
            return
        if IN_CODE <= prev < IN_OTHER:
            inner = self._highlight_code(text, prev - IN_CODE, base=self._code_base)
            self.setCurrentBlockState(IN_CODE + inner)
        elif prev >= IN_OTHER:
            self.setFormat(0, qt_length(text), self._code_base)
            self.setCurrentBlockState(IN_OTHER)
        else:
            self.setCurrentBlockState(0)
