"""Highlighting of a model's reply: code fences monospaced and highlighted, prose left alone."""

from __future__ import annotations

from pygments.token import Token
from PySide6.QtGui import QTextDocument

from rlm_desktop.ui.highlighter import ResponseHighlighter

REPLY = """I will count the late deliveries first.
```repl
def late(rows):
    return [r for r in rows if r["days_late"] > 0]
doc = \"\"\"a multi-line
string with def inside\"\"\"
```
Then a table:
```text
def is not a keyword here
```
Done: def is prose again."""


def _ranges(doc: QTextDocument, line: int) -> list[tuple[int, int, bool, str]]:
    block = doc.findBlockByNumber(line)
    return [(r.start, r.length, r.format.fontFixedPitch(), r.format.foreground().color().name())
            for r in block.layout().formats()]


def test_fenced_python_is_highlighted_other_fences_monospaced_and_prose_untouched(qapp) -> None:  # noqa: ANN001
    doc = QTextDocument()
    doc.setPlainText(REPLY)
    hl = ResponseHighlighter(doc)
    hl.rehighlight()
    keyword = hl.format_for(Token.Keyword).foreground().color().name()
    assert _ranges(doc, 0) == []                                    # prose
    fence = _ranges(doc, 1)
    assert len(fence) == 1 and fence[0][2] and fence[0][1] == len("```repl")
    code = _ranges(doc, 2)                                          # def late(rows):
    assert all(fixed for _s, _l, fixed, _c in code)
    assert (0, 3, True, keyword) in code
    in_string = _ranges(doc, 5)                                     # string with def inside
    assert all(color != keyword for _s, _l, _f, color in in_string)  # a string, not a keyword
    assert _ranges(doc, 7) == []                                    # prose after the fence
    other = _ranges(doc, 9)                                         # inside ```text
    assert other and all(fixed for _s, _l, fixed, _c in other)
    assert all(color != keyword for _s, _l, _f, color in other)
    assert _ranges(doc, 11) == []                                   # prose again


def test_code_view_carries_a_triple_quoted_string_across_lines(qapp) -> None:  # noqa: ANN001
    from rlm_desktop.ui.highlighter import PygmentsHighlighter

    doc = QTextDocument()
    doc.setPlainText('x = 1\nnote = """first line\nimport this is text\nstill text"""\nimport os\n'
                     "s = '''one\ndef two'''\ndef three(): pass")
    hl = PygmentsHighlighter(doc)
    hl.rehighlight()
    keyword = hl.format_for(Token.Keyword.Namespace).foreground().color().name()
    kw_def = hl.format_for(Token.Keyword).foreground().color().name()
    string = hl.format_for(Token.Literal.String.Double).foreground().color().name()
    assert [c for _s, _l, _f, c in _ranges(doc, 2)] == [string]      # inside the string
    assert [c for _s, _l, _f, c in _ranges(doc, 3)] == [string]      # its closing line
    assert (0, 6, False, keyword) in _ranges(doc, 4)                 # code again after it
    assert all(c != kw_def for _s, _l, _f, c in _ranges(doc, 6))     # inside ''' … '''
    assert (0, 3, False, kw_def) in _ranges(doc, 7)


def test_messages_highlight_code_and_a_cut_message_does_not_leak_its_fence(qtbot) -> None:  # noqa: ANN001
    from rlm_desktop.ui.detail_pane import MESSAGE_PREVIEW_CHARS, MessagesSection

    section = MessagesSection()
    qtbot.addWidget(section)
    long_code = "```repl\n" + "for i in range(3):\n    print(i)\n" * (MESSAGE_PREVIEW_CHARS // 20) + "```"
    section.set_messages([{"role": "assistant", "content": long_code},
                          {"role": "user", "content": "def is just a word in this reply"}])
    section.highlighter.rehighlight()
    doc = section.edit.document()
    lines = section.edit.toPlainText().split("\n")
    keyword = section.highlighter.format_for(Token.Keyword).foreground().color().name()
    assert (0, 3, True, keyword) in _ranges(doc, lines.index("for i in range(3):"))
    user_body = lines.index("def is just a word in this reply")
    assert "[…" in section.edit.toPlainText()                    # the first message was cut
    assert all(not fixed for _s, _l, fixed, _c in _ranges(doc, user_body))
    assert all(c != keyword for _s, _l, _f, c in _ranges(doc, user_body))


def test_formats_after_an_emoji_cover_the_keyword_in_utf16_units(qapp) -> None:  # noqa: ANN001
    """Qt counts UTF-16 units: after a character outside the BMP (two units, one Python character)
    the keyword's format must start one unit later than its Python offset, or it covers ' impor'."""
    from rlm_desktop.ui.highlighter import PygmentsHighlighter, qt_length

    line = 's = "📄🧾"; import os'
    doc = QTextDocument()
    doc.setPlainText(line + "\nx = 1")
    hl = PygmentsHighlighter(doc)
    hl.rehighlight()
    keyword = hl.format_for(Token.Keyword.Namespace).foreground().color().name()
    start = qt_length(line[:line.index("import")])
    assert start == line.index("import") + 2                        # two emoji, one extra unit each
    block = doc.findBlockByNumber(0)
    kw = [(s, n) for s, n, _f, c in _ranges(doc, 0) if c == keyword]
    assert kw == [(start, len("import"))]
    units = block.text().encode("utf-16-le")                        # what Qt shows under the format
    assert units[2 * start:2 * (start + 6)].decode("utf-16-le") == "import"
    # The formats tile the line in Qt's units: none runs past its end.
    assert max(s + n for s, n, _f, _c in _ranges(doc, 0)) <= qt_length(line)


def test_reply_code_after_an_emoji_is_highlighted_at_its_utf16_position(qapp) -> None:  # noqa: ANN001
    from rlm_desktop.ui.highlighter import qt_length

    doc = QTextDocument()
    doc.setPlainText("Here 🙂:\n```repl\nprint('🙂') ; import re\n```")
    hl = ResponseHighlighter(doc)
    hl.rehighlight()
    code = "print('🙂') ; import re"
    keyword = hl.format_for(Token.Keyword.Namespace).foreground().color().name()
    start = qt_length(code[:code.index("import")])
    assert (start, 6, True, keyword) in _ranges(doc, 2)
