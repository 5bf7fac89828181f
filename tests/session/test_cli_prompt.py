"""`rlm-desktop run --note` and `--system-prompt-file` (issue 10): the note reaches the system
prompt and stays with a --session; a custom prompt replaces the default, one lacking the REPL
contract gets a `warning:` line naming what is missing, and the trace records what was sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm_desktop.engine import prompts
from rlm_desktop.session.prefs import Preferences, preferences_path
from tests.engine.conftest import is_root, route
from tests.fakeserver import FakeOpenAI
from tests.session.test_cli_sessions import _rlm
from tests.session.test_prompt_note import recorded_system_prompts

NOTE = "incident tickets from 2025; severity is in column 1"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "tickets"
    d.mkdir()
    (d / "t.csv").write_text("sev,text\n1,disk full\n3,typo\n", encoding="utf-8")
    return d


def _base(srv: FakeOpenAI) -> list[str]:
    return ["--base-url", srv.base_url, "--model", "fake-root", "--allow-weak-sandbox", "--json"]


def test_the_note_goes_into_the_system_prompt_and_stays_with_the_session(
        fake_openai: FakeOpenAI, docs: Path) -> None:
    fake_openai.handler = route(["FINAL(one)", "FINAL(two)"])
    r1 = _rlm("run", "--session", "tickets", "--docs", str(docs), "--note", NOTE, "--query", "Worst?",
              *_base(fake_openai))
    assert r1.returncode == 0, r1.stderr
    r2 = _rlm("run", "--session", "tickets", "--query", "Next?", *_base(fake_openai))
    assert r2.returncode == 0, r2.stderr
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert len(sent) == 2 and sent[0] == sent[1]
    assert f"{prompts.NOTE_HEADING}\n<<<\n{NOTE}\n>>>" in sent[0]
    assert recorded_system_prompts(Path(json.loads(r2.stdout)["trace"])) == sent
    # Another note for the same session is refused, saying what to do.
    r3 = _rlm("run", "--session", "tickets", "--note", "other", "--query", "x", *_base(fake_openai))
    assert r3.returncode == 2 and "start a new session" in r3.stderr
    assert len(fake_openai.chat_requests) == 2


def test_a_note_too_long_is_a_usage_error(docs: Path) -> None:
    r = _rlm("run", "--docs", str(docs), "--note", "x" * 1001, "--query", "x", "--provider", "demo")
    assert r.returncode == 2
    assert "--note: the note is 1,001 characters; keep it to 1,000 or fewer" in r.stderr


def test_a_custom_prompt_with_the_contract_runs_without_a_warning(
        fake_openai: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    f = tmp_path / "prompt.txt"
    f.write_text("Analyst prompt. Use `context`, llm_query, ```repl blocks, FINAL(answer).\n"
                 "{context_description}\n", encoding="utf-8")
    fake_openai.handler = route(["FINAL(one)"])
    r = _rlm("run", "--docs", str(docs), "--system-prompt-file", str(f), "--query", "Worst?",
             *_base(fake_openai))
    assert r.returncode == 0, r.stderr
    assert "warning: the custom system prompt" not in r.stderr
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert sent[0].startswith("Analyst prompt.") and "one document of 28 characters" in sent[0]
    assert recorded_system_prompts(Path(json.loads(r.stdout)["trace"])) == sent


def test_a_custom_prompt_lacking_the_contract_warns_naming_what_is_missing_and_still_runs(
        fake_openai: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    f = tmp_path / "prompt.txt"
    f.write_text("You are a helpful assistant. Read the context and answer.", encoding="utf-8")
    fake_openai.handler = route(["FINAL(one)"])
    r = _rlm("run", "--docs", str(docs), "--system-prompt-file", str(f), "--query", "Worst?", "--quiet",
             *_base(fake_openai))
    assert r.returncode == 0, r.stderr
    warning = [line for line in r.stderr.splitlines() if "warning: the custom system prompt" in line]
    assert len(warning) == 1, r.stderr
    assert "does not mention `llm_query` (sub-model calls), ```repl code fences (or ```python), " \
           "FINAL / FINAL_VAR (how to answer)" in warning[0]
    assert "`context`" not in warning[0].split("does not mention")[1].split(";")[0]
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert sent[0].startswith("You are a helpful assistant.")


def test_the_apps_custom_prompt_applies_and_the_file_overrides_it(
        fake_openai: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    Preferences(preferences_path()).set_custom_system_prompt("Settings prompt: no contract here.")
    fake_openai.handler = route(["FINAL(one)", "FINAL(two)"])
    r = _rlm("run", "--docs", str(docs), "--query", "Worst?", *_base(fake_openai))
    assert r.returncode == 0, r.stderr
    assert "custom system prompt from the app's Settings" in r.stderr
    assert "warning: the custom system prompt (the app's Settings) does not mention `context`" in r.stderr
    f = tmp_path / "p.txt"
    f.write_text("File prompt: context, llm_query, ```python, FINAL_VAR.", encoding="utf-8")
    r = _rlm("run", "--docs", str(docs), "--system-prompt-file", str(f), "--query", "x", *_base(fake_openai))
    assert r.returncode == 0, r.stderr
    assert "warning: the custom system prompt" not in r.stderr
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert sent[0].startswith("Settings prompt:") and sent[1].startswith("File prompt:")


def test_an_unreadable_prompt_file_is_a_usage_error(docs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe prompt")
    r = _rlm("run", "--docs", str(docs), "--system-prompt-file", str(bad), "--query", "x",
             "--provider", "demo")
    assert r.returncode == 2 and "is not UTF-8 text" in r.stderr
    r = _rlm("run", "--docs", str(docs), "--system-prompt-file", str(tmp_path / "none.txt"),
             "--query", "x", "--provider", "demo")
    assert r.returncode == 2 and "cannot read --system-prompt-file" in r.stderr
