"""Sessions through the Python API: follow-up turns keep the REPL, a reopened session rebuilds it
from its trace without a model request, and the earlier-turn block is a stable prefix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm_desktop import Session, completion
from rlm_desktop.core.config import RunLimits, SandboxLimits
from rlm_desktop.core.trace import Attr, SpanKind, read_trace
from rlm_desktop.session.store import SessionBusy, SessionStore
from tests.engine.conftest import is_root, make_provider, route
from tests.fakeserver import FakeOpenAI, Reply

TURN1 = [
    "Let me count.\n```repl\nwords = context.split()\nn = len(words)\nprint(n)\n```",
    "FINAL(there are many words)",
]
TURN2 = [
    # Uses `n` and `words`, made by turn 1's code: only a kept (or rebuilt) REPL has them.
    "```repl\nprint(n * 2, words[0])\n```",
    "```repl\nFINAL(f'double is {n * 2}')\n```",
]


def _session(srv: FakeOpenAI, store_root: Path, name: str | None = "s1", **kw: object) -> Session:
    return Session(context="alpha beta gamma delta", name=name, provider=make_provider(srv),
                   store=SessionStore(store_root), sandbox=SandboxLimits(allow_weak=True),
                   limits=RunLimits(max_iterations=6), **kw)  # type: ignore[arg-type]


def test_follow_up_uses_the_variables_of_the_first_turn(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.handler = route(TURN1 + TURN2)
    with _session(fake_openai, tmp_path) as s:
        r1 = s.ask("How many words?")
        assert r1.status == "ok" and r1.answer == "there are many words"
        assert r1.variables is not None and "n: int" in r1.variables and "words: list" in r1.variables
        r2 = s.ask("Double it?")
        assert r2.status == "ok", r2.reason
        assert r2.answer == "double is 8"
        assert r2.turn == 2 and r2.trace == r1.trace
    trace = read_trace(r1.trace)
    turns = [r for r in trace.roots if r.kind == SpanKind.RUN]
    assert [r.attributes.get(Attr.TURN) for r in turns] == [1, 2]
    cell = next(c for c in trace.spans.values() if c.kind == SpanKind.CODE_CELL
                and "print(n * 2" in str(c.attributes.get(Attr.CODE)))
    assert cell.attributes.get(Attr.STDOUT) == "8 alpha\n"


def test_the_earlier_turn_block_is_a_byte_identical_prefix_of_the_next_request(
        fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.handler = route(TURN1 + TURN2 + ["```repl\nFINAL(str(n))\n```"])
    with _session(fake_openai, tmp_path) as s:
        s.ask("How many words?")
        s.ask("Double it?")
        s.ask("And the count?")
    roots = [json.dumps(r.messages, ensure_ascii=False) for r in fake_openai.chat_requests if is_root(r)]
    firsts = [r for r in fake_openai.chat_requests if is_root(r)]
    # The first request of turn 2 and of turn 3 (indexes 2 and 4 among the root requests).
    t2, t3 = firsts[2].messages, firsts[4].messages
    head2 = t2[:-1]                           # system + earlier-turn block (turn 1)
    assert t3[:len(head2)] == head2           # the whole block, message for message
    prefix = json.dumps(head2, ensure_ascii=False)[:-1]
    assert json.dumps(t3, ensure_ascii=False).startswith(prefix)   # and byte for byte
    assert t2[0] == firsts[0].messages[0]     # the system prompt never changes
    assert "[earlier turn 1] Question: How many words?" in t2[1]["content"]
    assert "n: int" in t2[2]["content"]
    assert roots  # (every root request was recorded)


def test_a_reopened_session_rebuilds_its_repl_without_any_model_request(
        fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.handler = route(
        ["```repl\nhalf = llm_query('summarise: ' + context[:10])\nn = len(context.split())\nprint(half)\n```",
         "FINAL(done)"], sub=lambda req: "SUMMARY")
    with _session(fake_openai, tmp_path) as s:
        assert s.ask("First?").status == "ok"
    before = len(fake_openai.chat_requests)

    seen_during_rebuild: list[int] = []
    fake_openai.handler = route(["```repl\nprint(half, n)\n```", "```repl\nFINAL(half + str(n))\n```"],
                                sub=lambda req: "NEW")
    with _session(fake_openai, tmp_path) as s2:
        assert s2.turn_count == 1
        r = s2.ask("Second?")
        seen_during_rebuild.append(len(fake_openai.chat_requests))
    assert r.status == "ok", r.reason
    assert r.answer == "SUMMARY4"               # `half` came from the recording, not a new sub-call
    assert r.rebuild is not None and r.rebuild.complete and r.rebuild.cells == 1
    assert r.rebuild.sub_calls == 1
    # Only the two root calls of turn 2: the rebuild itself asked the server nothing.
    new = fake_openai.chat_requests[before:]
    assert len(new) == 2 and all(is_root(q) for q in new)
    trace = read_trace(r.trace)
    replay = [sp for sp in trace.spans.values() if sp.attributes.get(Attr.REPLAY)]
    assert len(replay) == 1 and replay[0].parent is not None
    assert replay[0].parent.attributes.get(Attr.TURN) == 2


def test_a_cell_that_cannot_be_replayed_is_reported(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.handler = route(
        ["```repl\nimport time\nstamp = time.time()\nprint(stamp)\n```",
         "```repl\nbad = 1/0\n```",
         "FINAL(ok)"])
    with _session(fake_openai, tmp_path) as s:
        assert s.ask("First?").status == "ok"
    fake_openai.handler = route(["FINAL(again)"])
    with _session(fake_openai, tmp_path) as s2:
        r = s2.ask("Second?")
    assert r.rebuild is not None and not r.rebuild.complete
    texts = [p.text() for p in r.rebuild.problems]
    assert any("output differs" in t for t in texts), texts        # it read the clock
    assert any("failed when it ran" in t for t in texts), texts    # 1/0
    # The model is told what was not rebuilt.
    last_root = [q for q in fake_openai.chat_requests if is_root(q)][-1]
    assert "not exactly" in last_root.last_user


def test_a_session_is_open_in_one_place_at_a_time(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    with _session(fake_openai, tmp_path):
        with pytest.raises(SessionBusy):
            _session(fake_openai, tmp_path)


def test_completion_one_call_form(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.handler = route(["```repl\nFINAL(context['a.txt'].upper())\n```"])
    r = completion({"a.txt": "hello"}, "Shout it", provider=make_provider(fake_openai),
                   sandbox=SandboxLimits(allow_weak=True), trace_path=tmp_path / "t.jsonl",
                   record_history=False)
    assert r.answer == "HELLO" and r.status == "ok" and r.session is None


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 65])
def test_bad_session_names_are_refused_with_what_is_allowed(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        Session(context="x", name=bad, store=SessionStore(tmp_path))


def test_unreachable_reply_keeps_test_honest(fake_openai: FakeOpenAI) -> None:
    # The scripted server answers 400 when a script is exhausted: a session that asked more than
    # scripted would fail loudly instead of passing by accident.
    fake_openai.script(Reply.error(400, "nothing scripted"))
    assert fake_openai.pending == 1


def test_a_single_document_is_described_by_its_kind(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    # One document becomes a plain str `context` with no name: the session still tells the engine
    # what kind it is, so the system prompt carries the guidance for tables.
    doc = tmp_path / "sales.csv"
    doc.write_text("region,total\nnorth,300\n", encoding="utf-8")
    fake_openai.handler = route(["```repl\nFINAL(context.splitlines()[1])\n```"])
    with Session(docs=[doc], provider=make_provider(fake_openai), sandbox=SandboxLimits(allow_weak=True),
                 trace_path=tmp_path / "t.jsonl", record_history=False) as s:
        assert s.ask("First row?").answer == "north,300"
    system = [q for q in fake_openai.chat_requests if is_root(q)][0].system
    assert "tables (1: csv 1)" in system


def _root_requests(srv: FakeOpenAI) -> list:  # noqa: ANN401
    return [r for r in srv.chat_requests if is_root(r)]


def test_a_follow_up_can_use_a_stronger_model_keeping_the_repl(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    """A session's models can change between turns: the REPL and earlier turns stay, the model is
    told, the request goes to the new model; only a new sub-model changes the system prompt."""
    fake_openai.handler = route(TURN1 + TURN2 + ["```repl\nFINAL(str(n))\n```"])
    with _session(fake_openai, tmp_path) as s:
        s.ask("How many words?")
        first = _root_requests(fake_openai)
        r2 = s.ask("Double it?", model="big-root")               # root model only
        assert r2.status == "ok" and r2.answer == "double is 8"     # the REPL's n survived
        assert s.root_model == "big-root" and s.sub_model == "fake-sub"
        second = _root_requests(fake_openai)[len(first):]
        assert {r.body["model"] for r in second} == {"big-root"}
        assert second[0].system == first[0].system                  # same system prompt, byte for byte
        assert "the root model is big-root (it was fake-root)" in json.dumps(second[0].messages)
        s.ask("And the count?", sub_model="big-sub")               # a new sub-model: a new prompt
        third = _root_requests(fake_openai)[len(first) + len(second):]
        assert 'default "big-sub"' in third[0].system and 'default "fake-sub"' in first[0].system
    # reopened, it remembers the models of its last turn
    with _session(fake_openai, tmp_path) as again:
        assert (again.root_model, again.sub_model) == ("big-root", "big-sub")
    # reopened with other models (as `rlm-desktop run --session s1 --sub-model …` does): told, and
    # the system prompt names the sub-model in use
    fake_openai.handler = route(["```repl\nFINAL(str(n))\n```"])
    before = len(_root_requests(fake_openai))
    with _session(fake_openai, tmp_path, sub_model="other-sub") as again:
        assert again.ask("Once more?").answer == "4"
    req = _root_requests(fake_openai)[before]
    assert 'default "other-sub"' in req.system
    assert "llm_query uses other-sub by default (it was big-sub)" in json.dumps(req.messages)


def test_the_demo_models_cannot_change(tmp_path: Path) -> None:
    from rlm_desktop.session.session import SessionError

    with Session(context="alpha", provider="demo", store=SessionStore(tmp_path),
                 sandbox=SandboxLimits(allow_weak=True)) as s:
        with pytest.raises(SessionError, match="fixed models"):
            s.set_models("gpt-x")


@pytest.mark.parametrize("files", [1, 2], ids=["one-document", "a-folder"])
def test_adding_a_folder_says_how_the_keys_of_context_changed(fake_openai: FakeOpenAI, tmp_path: Path,
                                                              files: int) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    for i in range(files):
        (a / f"a{i}.txt").write_text(f"alpha {i}\n")
    (b / "b.txt").write_text("beta\n")
    fake_openai.handler = route(["FINAL(one)", "FINAL(two)"])
    with Session([a], name="keys", provider=make_provider(fake_openai), store=SessionStore(tmp_path / "st"),
                 sandbox=SandboxLimits(allow_weak=True)) as s:
        s.ask("first?")
        s.add_documents([b])
        assert set(s.context) == {f"A/a{i}.txt" for i in range(files)} | {"B/b.txt"}
        s.ask("second?")
    told = json.dumps(_root_requests(fake_openai)[-1].messages)
    if files == 1:
        assert "`context` was one string (the text of a0.txt)" in told and "context['A/a0.txt']" in told
    else:
        assert "'a0.txt' is now 'A/a0.txt'" in told and "'a1.txt' is now 'A/a1.txt'" in told
