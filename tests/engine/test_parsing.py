"""Reading root replies: code fences and the textual FINAL forms."""

from __future__ import annotations

from rlm_desktop.engine.parsing import find_textual_final, needs_answer_dict, parse_reply, uses_answer_dict


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


# -- tool-call dialects (issue 8 item 19) ------------------------------------------------------------

def _invoke(name: str, params: dict[str, str], ns: str = "") -> str:
    body = "".join(f'<{ns}parameter name="{k}">{v}</{ns}parameter>\n' for k, v in params.items())
    return f'<{ns}invoke name="{name}">\n{body}</{ns}invoke>\n'


def test_function_calls_invoke_is_code_in_order() -> None:
    text = ("Let me look.\n<function_calls>\n"
            + _invoke("python", {"code": 'x = [1, 2]\nprint(x[0] < 2 and "a&b")'})
            + _invoke("execute_code", {"code": "print(2)"})
            + "</function_calls>\n")
    p = parse_reply(text)
    assert p.code_blocks == ['x = [1, 2]\nprint(x[0] < 2 and "a&b")', "print(2)"]
    assert p.dialects == ("invoke",) and p.unknown_calls == () and p.final is None
    assert "<invoke" not in p.prose and "Let me look." in p.prose


def test_bare_invoke_with_namespace_prefix_and_fenced_parameter() -> None:
    p = parse_reply(_invoke("repl", {"code": "```python\nprint(1)\n```"}, ns="xyz:"))
    assert p.code_blocks == ["print(1)"] and p.dialects == ("invoke",)


def test_qwen_hermes_tool_call_json_with_dict_or_string_arguments() -> None:
    p = parse_reply('<tool_call>\n{"name": "python", "arguments": {"code": "print(1)\nprint(2)"}}\n</tool_call>')
    assert p.code_blocks == ["print(1)\nprint(2)"] and p.dialects == ("tool_call",)
    p = parse_reply('<tool_call>{"name": "run_python", "arguments": "{\\"code\\": \\"y = 3\\"}"}</tool_call>')
    assert p.code_blocks == ["y = 3"]


def test_final_answer_tool_calls_are_textual_finals() -> None:
    p = parse_reply(_invoke("final_answer", {"answer": "The total is 42."}))
    assert not p.has_code and p.final is not None
    assert (p.final.via, p.final.value) == ("FINAL", "The total is 42.")
    p = parse_reply('<tool_call>{"name": "FINAL_VAR", "arguments": {"name": "result"}}</tool_call>')
    assert p.final is not None and (p.final.via, p.final.value) == ("FINAL_VAR", "result")
    # Code and a final tool in one reply: both kept (the engine runs the code first).
    p = parse_reply('<tool_call>{"name": "python", "arguments": {"code": "r = 1"}}</tool_call>\n'
                    '<tool_call>{"name": "final_answer", "arguments": {"answer": "1"}}</tool_call>')
    assert p.code_blocks == ["r = 1"] and p.final is not None and p.final.value == "1"


def test_ambiguous_or_foreign_tool_calls_are_not_run() -> None:
    p = parse_reply(_invoke("bash", {"command": "cat ~/.ssh/id_rsa"}))
    assert not p.has_code and p.final is None and p.unknown_calls == ("bash",)
    p = parse_reply(_invoke("python", {"code": "print(1)", "timeout": "5", "mode": "x"}))
    assert p.code_blocks == ["print(1)"]     # the code parameter is named: unambiguous
    p = parse_reply(_invoke("python", {"src": "print(1)", "other": "2"}))
    assert not p.has_code and p.unknown_calls == ("python",)   # two parameters, none named code
    p = parse_reply("<tool_call>{not json</tool_call>")
    assert not p.has_code and p.unknown_calls == ("(not valid JSON)",)
    assert parse_reply('<tool_call>{"name": "python", "arguments": {"code": "x=1"}}').code_blocks == []  # cut


def test_fenced_code_wins_over_tool_calls_and_code_mentioning_tags_is_code() -> None:
    text = ("```repl\nprint('<tool_call>{\"name\": \"python\"}</tool_call>')\n```\n"
            + _invoke("python", {"code": "print('never')"}))
    p = parse_reply(text)
    assert p.code_blocks == ["print('<tool_call>{\"name\": \"python\"}</tool_call>')"] and p.dialects == ()


def test_answer_dict_protocol_detection() -> None:
    assert uses_answer_dict('answer["content"] = total\nanswer["ready"] = True')
    assert uses_answer_dict("answer = {'content': x,\n          'ready': True}")
    assert needs_answer_dict("answer['ready'] = True") and needs_answer_dict('answer["content"] = 1')
    assert not needs_answer_dict("answer = {'content': 1, 'ready': True}")
    assert not uses_answer_dict("answer = llm_query('q')\nprint(answer)")
    assert not uses_answer_dict("ready = True")
