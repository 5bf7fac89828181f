"""The user's note and a custom system prompt (issue 10): the note is a delimited paragraph of the
session's system prompt, byte-identical across turns; a custom prompt replaces the default (the
documents' description still filled in); and the system message the trace records is, byte for
byte, the one the server received."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_desktop import Session
from rlm_desktop.core.config import RunLimits, SandboxLimits
from rlm_desktop.core.trace import Attr, SpanKind, read_trace
from rlm_desktop.engine import prompts
from rlm_desktop.session.session import SessionError
from rlm_desktop.session.store import SessionStore
from tests.engine.conftest import is_root, make_provider, route
from tests.fakeserver import FakeOpenAI

NOTE = "incident tickets from 2025; severity is in column 1"
CONTRACT_PROMPT = ("You are a careful analyst. The documents are in `context` in a Python REPL; write "
                   "code in ```repl blocks, call llm_query(prompt) for sub-models, and end with "
                   "FINAL(answer) or FINAL_VAR(name). Keep {braces} as written.\n\n"
                   "About the documents:\n{context_description}")


def _session(srv: FakeOpenAI, store_root: Path, name: str | None = "s1", **kw: object) -> Session:
    return Session(context={"a.txt": "alpha beta\ngamma", "b.csv": "sev,text\n1,disk full"}, name=name,
                   provider=make_provider(srv), store=SessionStore(store_root),
                   sandbox=SandboxLimits(allow_weak=True), limits=RunLimits(max_iterations=4),
                   **kw)  # type: ignore[arg-type]


def recorded_system_prompts(trace_path: Path) -> list[str]:
    """The system message of each root-model llm_call whose recorded messages carry one (the first
    call of every run or turn records the full conversation)."""
    trace = read_trace(trace_path)
    out: list[str] = []
    for sp in trace.spans.values():
        if sp.kind == SpanKind.LLM_CALL and sp.attributes.get(Attr.DEPTH, 0) == 0:
            for m in sp.attributes.get(Attr.MESSAGES) or []:
                if isinstance(m, dict) and m.get("role") == "system":
                    out.append(str(m.get("content")))
    return out


def test_the_note_is_in_the_system_prompt_byte_identical_across_turns_and_in_the_trace(
        fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.handler = route(["FINAL(one)", "FINAL(two)"])
    with _session(fake_openai, tmp_path, note=f"  {NOTE}\n") as s:
        assert s.ask("First?").status == "ok"
        r = s.ask("Second?")
        assert r.status == "ok", r.reason
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert len(sent) == 2
    assert sent[0] == sent[1]                                    # byte for byte, turn 2 reuses it
    assert sent[0].endswith(f"\n\n{prompts.NOTE_HEADING}\n<<<\n{NOTE}\n>>>")   # stripped, delimited
    assert "Documents (characters):" in sent[0]                  # still the default prompt
    assert recorded_system_prompts(r.trace) == sent              # the trace shows what was sent


def test_the_default_prompt_in_the_trace_is_what_the_server_received(
        fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.handler = route(["FINAL(one)"])
    with _session(fake_openai, tmp_path, name=None) as s:
        r = s.ask("First?")
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert prompts.NOTE_HEADING not in sent[0]
    assert recorded_system_prompts(r.trace) == sent


def test_a_custom_prompt_replaces_the_default_with_the_documents_filled_in(
        fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.handler = route(["FINAL(one)"])
    with _session(fake_openai, tmp_path, name=None, custom_prompt=CONTRACT_PROMPT, note=NOTE) as s:
        r = s.ask("First?")
    assert r.status == "ok", r.reason
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert sent[0].startswith("You are a careful analyst.")
    assert "Keep {braces} as written." in sent[0]
    assert "{context_description}" not in sent[0]
    assert "- a.txt: 16" in sent[0] and "- b.csv: 20" in sent[0]    # the documents, by size
    assert "You answer a question about documents" not in sent[0]   # the default is gone
    assert sent[0].endswith(f"{prompts.NOTE_HEADING}\n<<<\n{NOTE}\n>>>")   # the note, appended
    assert recorded_system_prompts(r.trace) == sent


def test_a_custom_prompt_without_a_placeholder_gets_the_description_appended() -> None:
    info = prompts.describe_context({"a.txt": "x"})
    out = prompts.custom_system_prompt("Use context, llm_query, ```repl and FINAL.\n", info)
    assert out == ("Use context, llm_query, ```repl and FINAL.\n\n" + prompts.context_description(info)
                   + "\n\n" + prompts.kinds_description(info))


def test_what_a_custom_prompt_lacks_of_the_repl_contract_is_named() -> None:
    assert prompts.missing_contract(CONTRACT_PROMPT) == []
    assert prompts.missing_contract("Answer with FINAL_VAR; code in ```python fences; use context and "
                                    "llm_query.") == []
    missing = prompts.missing_contract("You are a helpful assistant. Use the context.")
    assert missing == ["`llm_query` (sub-model calls)", "```repl code fences (or ```python)",
                       "FINAL / FINAL_VAR (how to answer)"]


def test_a_note_too_long_is_refused_saying_the_limit(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    with pytest.raises(SessionError, match=r"1,001 characters; keep it to 1,000 or fewer"):
        _session(fake_openai, tmp_path, note="x" * 1001)
    assert not fake_openai.chat_requests


def test_the_note_cannot_change_mid_session_and_a_named_session_keeps_it(
        fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.handler = route(["FINAL(one)", "FINAL(two)"])
    with _session(fake_openai, tmp_path, note=NOTE) as s:
        assert s.ask("First?").status == "ok"
        s.set_note(NOTE)                                  # the same note: nothing changes
        with pytest.raises(SessionError, match="start a new session"):
            s.set_note("another note")
        assert s.note == NOTE
    with pytest.raises(SessionError, match="start a new session"):
        _session(fake_openai, tmp_path, note="another note")
    with _session(fake_openai, tmp_path) as s2:             # reopened without --note: the saved one
        assert s2.note == NOTE
        assert s2.ask("Second?").status == "ok"
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert sent[0] == sent[1] and NOTE in sent[1]


def test_a_note_set_after_the_trace_opened_is_saved_with_the_session(
        fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    with _session(fake_openai, tmp_path) as s:
        s.open_trace("First?")
        s.set_note(NOTE)
    assert SessionStore(tmp_path).load_meta("s1")["note"] == NOTE
