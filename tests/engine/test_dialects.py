"""Replies in other dialects (issue 8 item 19), end to end: real HTTP to the scripted server, real
REPL processes. Tool-call forms (``<function_calls>``/``<invoke>``, ``<tool_call>{json}``) run their
code; the official RLM library's ``answer`` dict delivers the answer; anything else is corrected."""

from __future__ import annotations

from rlm_desktop.core.trace import Attr, SpanKind
from tests.engine.conftest import is_root, make_config, make_provider, route, run
from tests.fakeserver import FakeOpenAI

DOC = "Intro. The magic number is 42. Outro."


def _roots(srv: FakeOpenAI) -> list:
    return [r for r in srv.chat_requests if is_root(r)]


def test_function_calls_invoke_runs_the_code_and_final_answer_tool_ends(srv: FakeOpenAI) -> None:
    srv.handler = route([
        "I will look at the context.\n<function_calls>\n<invoke name=\"python\">\n"
        "<parameter name=\"code\">n = context.split()[-2].strip('.')\nprint('found', n)</parameter>\n"
        "</invoke>\n</function_calls>",
        "<function_calls>\n<invoke name=\"final_answer\">\n<parameter name=\"answer\">It is 42.</parameter>\n"
        "</invoke>\n</function_calls>",
    ])
    res, trace = run(make_config(), DOC, make_provider(srv))
    assert res.status == "ok" and res.answer == "It is 42." and res.iterations == 2
    assert "found 42" in _roots(srv)[1].last_user      # the code really ran in the REPL
    cells = [s for s in trace if s.kind == SpanKind.CODE_CELL]
    assert cells[0].attributes[Attr.CODE].startswith("n = context.split()")


def test_qwen_tool_call_json_runs_the_code_and_final_var_reads_it(srv: FakeOpenAI) -> None:
    srv.handler = route([
        '<tool_call>\n{"name": "python", "arguments": {"code": "result = context.count(\'e\')\\nprint(result)"}}\n'
        '</tool_call>',
        '<tool_call>\n{"name": "FINAL_VAR", "arguments": {"name": "result"}}\n</tool_call>',
    ])
    res, _ = run(make_config(), DOC, make_provider(srv))
    assert res.status == "ok" and res.answer == str(DOC.count("e"))
    assert f"\n{DOC.count('e')}" in _roots(srv)[1].last_user


def test_answer_dict_protocol_of_the_official_rlm_library(srv: FakeOpenAI) -> None:
    srv.handler = route([
        "```repl\nanswer[\"content\"] = 'draft'\nprint(answer)\n```",      # not ready yet: the run goes on
        "```repl\nanswer[\"content\"] = 'The number is ' + context.split()[-2].strip('.')\n"
        "answer[\"ready\"] = True\n```",
        "FINAL(should not be needed)",
    ])
    res, trace = run(make_config(), DOC, make_provider(srv))
    assert res.status == "ok" and res.answer == "The number is 42" and res.iterations == 2
    assert "'content': 'draft', 'ready': False" in _roots(srv)[1].last_user
    final = next(s for s in trace if s.kind == SpanKind.FINAL)
    assert final.attributes[Attr.VIA] == "answer"


def test_answer_dict_assigned_whole(srv: FakeOpenAI) -> None:
    srv.handler = route(["```repl\nanswer = {'content': len(context), 'ready': True}\n```"])
    res, _ = run(make_config(), DOC, make_provider(srv))
    assert res.status == "ok" and res.answer == str(len(DOC)) and res.iterations == 1


def test_answer_as_a_plain_variable_is_not_a_final(srv: FakeOpenAI) -> None:
    srv.handler = route(["```repl\nanswer = 'not yet'\nready = True\nprint(answer)\n```", "FINAL(done)"])
    res, _ = run(make_config(), DOC, make_provider(srv))
    assert res.answer == "done" and res.iterations == 2


def test_a_foreign_tool_call_gets_the_corrective_message_and_does_not_run(srv: FakeOpenAI) -> None:
    srv.handler = route([
        "<function_calls>\n<invoke name=\"bash\">\n<parameter name=\"command\">ls /</parameter>\n"
        "</invoke>\n</function_calls>",
        "FINAL(Nothing to run here.)",
    ])
    res, trace = run(make_config(), DOC, make_provider(srv))
    assert res.answer == "Nothing to run here." and res.iterations == 2
    told = _roots(srv)[1].last_user
    assert "`bash`" in told and "neither a ```repl code block nor a final answer" in told
    assert not [s for s in trace if s.kind == SpanKind.CODE_CELL]
