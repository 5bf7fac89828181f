"""Reading root replies: code fences and the textual FINAL forms."""

from __future__ import annotations

from rlm_desktop.engine.parsing import find_textual_final, parse_reply


def test_repl_and_python_blocks_other_fences_ignored() -> None:
    text = ("Look:\n```repl\nx = 1\nprint(x)\n```\nthen\n```python\ny = 2\n```\n"
            "```text\nFINAL(not this)\n```\n```\nplain fence\n```\n")
    p = parse_reply(text)
    assert p.code_blocks == ["x = 1\nprint(x)", "y = 2"]
    assert p.final is None


def test_closing_fence_on_the_code_line_and_unclosed_block() -> None:
    p = parse_reply("```repl\nprint(1)\nprint(2)```\nok")
    assert p.code_blocks == ["print(1)\nprint(2)"]
    assert parse_reply("```repl print(3)```").code_blocks == ["print(3)"]
    assert parse_reply("```python\nz = 3\n").code_blocks == ["z = 3"]


def test_textual_final_balanced_nested_multiline_quoted() -> None:
    f = find_textual_final("Done.\nFINAL(The total is f(g(2)) = 7 (approx.))\ntrailing")
    assert f is not None and f.via == "FINAL" and f.value == "The total is f(g(2)) = 7 (approx.)"
    f = find_textual_final('FINAL("a string with ) and ( inside")')
    assert f is not None and f.value == "a string with ) and ( inside"
    f = find_textual_final("FINAL(line one\nline (two)\nline three)")
    assert f is not None and f.value == "line one\nline (two)\nline three"
    f = find_textual_final("FINAL(It's the users' files (all 3) that matter)")
    assert f is not None and f.value == "It's the users' files (all 3) that matter"
    f = find_textual_final("  FINAL_VAR(answer)")
    assert f is not None and f.via == "FINAL_VAR" and f.value == "answer"
    assert find_textual_final("FINAL_VAR('result')").value == "result"


def test_final_only_at_line_start_and_outside_code() -> None:
    assert find_textual_final("I will call FINAL(x) later") is None
    assert find_textual_final("FINAL(unbalanced") is None
    p = parse_reply("```repl\nFINAL('in code')\n```\n")
    assert p.final is None and p.code_blocks == ["FINAL('in code')"]
    p = parse_reply("```repl\nprint(1)\n```\nFINAL(42)")
    assert p.has_code and p.final is not None and p.final.value == "42"
