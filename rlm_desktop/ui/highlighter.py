"""Python syntax highlighting for code views: a QSyntaxHighlighter driven by pygments, with a
per-token-type format cache (after qtconsole's pygments_highlighter)."""

from __future__ import annotations

from pygments.lexer import Lexer
from pygments.lexers import PythonLexer
from pygments.styles import get_style_by_name
from pygments.token import Token, _TokenType
from PySide6.QtGui import QColor, QFont, QSyntaxHighlighter, QTextCharFormat, QTextDocument

LIGHT_STYLE = "default"
DARK_STYLE = "monokai"


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

    def highlightBlock(self, text: str) -> None:
        prev = self.previousBlockState()
        prefix = ""
        if prev > 0:
            # Inside a triple-quoted string started in an earlier block: lex with its opener.
            prefix = self._opener_for_state(prev)
        source = prefix + text
        pos = -len(prefix)
        state = 0
        last_token: _TokenType | None = None
        last_value = ""
        for token, value in self._lexer.get_tokens(source):
            length = len(value)
            start = max(pos, 0)
            end = pos + length
            if end > start:
                fmt = self.format_for(token)
                if fmt is not None:
                    self.setFormat(start, end - start, fmt)
            pos = end
            if value.strip():
                last_token, last_value = token, value
        if last_token is not None and last_token in Token.Literal.String and self._open_triple(last_value):
            state = 1 if '"""' in last_value else 2
        self.setCurrentBlockState(state)

    @staticmethod
    def _opener_for_state(state: int) -> str:
        return '"""' if state == 1 else "'''"

    @staticmethod
    def _open_triple(value: str) -> bool:
        for q in ('"""', "'''"):
            if value.count(q) % 2 == 1:
                return True
        return False
