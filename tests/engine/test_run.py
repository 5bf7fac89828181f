"""End-to-end runs: real HTTP to the scripted server, real REPL processes, the trace checked."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from rlm_desktop.core.cancel import CancelToken
from rlm_desktop.core.config import ModelPrice
from rlm_desktop.core.documents import load_documents
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter, read_trace
from rlm_desktop.engine.run import RunResult
from tests.engine.conftest import (
    TEST_KEY,
    assert_all_ended,
    is_root,
    make_config,
    make_provider,
    route,
    run,
)
from tests.fakeserver import FakeOpenAI, Reply, Request
from tests.proctree import pidfds, sandbox_processes, still_alive_after


def _root_requests(srv: FakeOpenAI) -> list[Request]:
    return [r for r in srv.chat_requests if is_root(r)]


def _kinds(trace: Trace) -> set[str]:
    return {str(s.kind) for s in trace}


def test_single_document_llm_query_trace_tokens_and_cost(srv: FakeOpenAI, tmp_path: Path) -> None:
    srv.handler = route([
        "Peek first.\n```repl\nprint(len(context))\nx = llm_query('Find the number: ' + context)\nprint(x)\n```",
        "FINAL(The magic number is 42)",
    ], sub=lambda r: Reply(text="42", usage={"prompt_tokens": 30, "completion_tokens": 2, "cached_tokens": 10}))
    prices = {"fake-root": ModelPrice(1.0, 4.0), "fake-sub": ModelPrice(0.5, 1.0, cached_input=0.25)}
    trace = Trace({})
    path = tmp_path / "t.jsonl"
    TraceWriter(path, {}).attach(trace)
    doc = "Intro. The magic number is 42. Outro."
    res, _ = run(make_config(), doc, make_provider(srv, prices=prices), trace=trace)
    assert res.status == "ok" and res.answer == "The magic number is 42" and res.stop_reason == "final"
    assert res.iterations == 2 and res.sub_calls == 1 and res.cost_known and res.cost_usd > 0
    roots = _root_requests(srv)
    assert f"one document of {len(doc)} characters" in roots[0].system
    assert doc not in json.dumps(roots[0].body)          # the root model never sees the document
    assert "[cell: ok" in roots[1].last_user and "\n42" in roots[1].last_user
    sub_req = [r for r in srv.chat_requests if not is_root(r)][0]
    assert sub_req.model == "fake-sub" and sub_req.last_user == "Find the number: " + doc
    assert {"run", "iteration", "llm_call", "code_cell", "sub_call", "final"} <= _kinds(trace)
    calls = [s for s in trace if s.kind == SpanKind.LLM_CALL]
    assert all(s.attributes[Attr.INPUT_TOKENS] > 0 and s.attributes[Attr.COST_USD] is not None for s in calls)
    sub_call = next(s for s in calls if s.attributes[Attr.MODEL] == "fake-sub")
    assert sub_call.attributes[Attr.CACHED_TOKENS] == 10
    assert sub_call.attributes[Attr.COST_USD] == pytest.approx((20 * 0.5 + 10 * 0.25 + 2 * 1.0) / 1e6)
    assert_all_ended(trace)
    # The file rebuilds the same tree; the second root call records only its new messages.
    back = read_trace(path)
    assert len(back) == len(trace) and not back.truncated
    second = [s for s in back if s.kind == SpanKind.LLM_CALL and s.attributes[Attr.MODEL] == "fake-root"][1]
    assert second.attributes[Attr.HISTORY_FROM] and len(second.attributes[Attr.MESSAGES]) == 2
    assert back.messages_for(second.id) == roots[1].messages
    assert back.header["isolation"]["level"] == res.isolation["level"]


def test_folder_context_and_final_var(srv: FakeOpenAI, tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("alpha " * 10)
    (tmp_path / "docs" / "sub" / "b.md").write_text("# beta\nthe key is 7\n")
    docs = load_documents([tmp_path / "docs"])
    srv.handler = route([
        "```repl\nnames = sorted(context)\nresult = ', '.join(names) + ' | ' + context['sub/b.md'].split()[-1]\n```",
        "FINAL_VAR(result)",
    ])
    res, trace = run(make_config(), docs.context_value(), make_provider(srv))
    assert res.status == "ok" and res.answer == "a.txt, sub/b.md | 7"
    system = _root_requests(srv)[0].system
    assert "dict[str, str] mapping 2 document" in system and "- sub/b.md: 20" in system
    final = next(s for s in trace if s.kind == SpanKind.FINAL)
    assert final.attributes[Attr.VIA] == "FINAL_VAR"


def test_batched_sub_calls_run_concurrently_in_order(srv: FakeOpenAI) -> None:
    srv.handler = route([
        "```repl\nout = llm_query_batched([f'item {i}' for i in range(6)])\nprint(out)\nFINAL(' '.join(out))\n```",
    ], sub=lambda r: Reply(text="ans-" + r.last_user.split()[-1], delay=0.3))
    res, trace = run(make_config(batch_concurrency=3), "ctx", make_provider(srv))
    assert res.answer == "ans-0 ans-1 ans-2 ans-3 ans-4 ans-5"
    assert srv.max_open == 3                      # bounded concurrency, observed at the server
    subs = [s for s in trace if s.kind == SpanKind.SUB_CALL]
    assert sorted(s.attributes[Attr.BATCH_INDEX] for s in subs) == list(range(6))
    assert res.sub_calls == 6


def test_failed_batch_item_is_an_error_string(srv: FakeOpenAI) -> None:
    def sub(r: Request) -> Reply | str:
        return Reply.error(400, "bad item") if r.last_user == "two" else r.last_user.upper()
    srv.handler = route(["```repl\nFINAL(repr(llm_query_batched(['one', 'two', 'three'])))\n```"], sub=sub)
    res, _ = run(make_config(), "ctx", make_provider(srv))
    items = eval(res.answer)  # noqa: S307 - a repr of a list of str written by our own cell
    assert items[0] == "ONE" and items[2] == "THREE"
    assert items[1].startswith("Error:") and "bad item" in items[1]


def test_nested_rlm_query_at_depth_two(srv: FakeOpenAI) -> None:
    def handler(r: Request) -> str:
        if not is_root(r):
            return "leaf:" + r.last_user
        depth = 2 if "nested run at depth 2" in r.system else 1 if "nested run at depth 1" in r.system else 0
        step = sum(1 for m in r.messages if m["role"] == "assistant")
        if depth == 0:
            return ("```repl\nr = rlm_query('level one task', context='one ctx')\nprint(r)\n```"
                    if step == 0 else "FINAL_VAR(r)")
        if depth == 1:
            return "```repl\nFINAL('L1[' + rlm_query('level two task') + ']')\n```"
        return "```repl\nFINAL('L2(' + context + ')' + llm_query('hi'))\n```"
    srv.handler = handler
    res, trace = run(make_config(max_depth=2), "root ctx", make_provider(srv))
    assert res.status == "ok" and res.answer == "L1[L2(one ctx)leaf:hi]"
    runs = [s for s in trace if s.kind == SpanKind.RUN]
    assert [r.attributes[Attr.DEPTH] for r in runs] == [0, 1, 2]
    for nested in runs[1:]:
        assert nested.parent is not None and nested.parent.kind == SpanKind.SUB_CALL
        assert nested.status == SpanStatus.OK and nested.attributes[Attr.ISOLATION]
    systems = [r.system for r in _root_requests(srv)]
    assert any("rlm_query` is not available here (maximum recursion depth 2" in s for s in systems)
    assert res.sub_calls == 3
    assert_all_ended(trace)


def test_cell_error_then_recovery_and_textual_final_after_failed_code_rejected(srv: FakeOpenAI) -> None:
    srv.handler = route([
        "```repl\nvalue = 1 / 0\n```\nFINAL(invented before seeing the output)",
        "```repl\nvalue = 6 * 7\nprint(value)\n```\nFINAL(42 it is)",
    ])
    res, trace = run(make_config(), "ctx", make_provider(srv))
    assert res.status == "ok" and res.answer == "42 it is" and res.iterations == 2
    second = _root_requests(srv)[1].last_user
    assert "ZeroDivisionError" in second and "FINAL was not accepted" in second
    cells = [s for s in trace if s.kind == SpanKind.CODE_CELL]
    assert cells[0].status == SpanStatus.ERROR and cells[1].status == SpanStatus.OK


def test_infinite_loop_cell_times_out_restarts_and_run_continues(srv: FakeOpenAI) -> None:
    srv.handler = route([
        "```repl\nkept = 'before'\n```",
        "```repl\nwhile True:\n    pass\n```",
        "```repl\nprint('kept' in globals())\nFINAL('survived')\n```",
    ])
    # The run limit bounds the test: a cell timeout that never fires ends the run by that limit.
    res, trace = run(make_config(cell_timeout_s=1.0, run_timeout_s=60), "ctx", make_provider(srv))
    assert res.status == "ok" and res.answer == "survived", \
        f"the looping cell was not ended by its 1 s timeout: {res.status} ({res.reason})"
    told = _root_requests(srv)[2].last_user
    assert "sandbox restarted: timeout after 1 s; variables lost" in told
    loop_cell = [s for s in trace if s.kind == SpanKind.CODE_CELL][1]
    assert loop_cell.status == SpanStatus.TIMEOUT
    assert "variables lost" in loop_cell.attributes[Attr.SANDBOX_RESTARTED]


def test_no_code_and_no_final_gets_a_corrective_message(srv: FakeOpenAI) -> None:
    srv.handler = route(["I think the answer is probably 42.", "FINAL(42)"])
    res, _ = run(make_config(), "ctx", make_provider(srv))
    assert res.answer == "42" and res.iterations == 2
    assert "neither a ```repl code block nor a final answer" in _root_requests(srv)[1].last_user


def test_cell_output_truncated_for_the_model(srv: FakeOpenAI) -> None:
    srv.handler = route(["```repl\nprint('A' * 5000 + 'TAIL')\n```", "FINAL(done)"])
    res, trace = run(make_config(max_output_chars=1000), "ctx", make_provider(srv))
    fed = _root_requests(srv)[1].last_user
    assert "output truncated" in fed and "TAIL" in fed and fed.count("A") < 1100
    cell = next(s for s in trace if s.kind == SpanKind.CODE_CELL)
    assert cell.attributes[Attr.STDOUT].endswith("TAIL\n")       # the trace keeps it all


def test_memo_cache_serves_identical_sub_calls(srv: FakeOpenAI) -> None:
    srv.handler = route(["```repl\na = llm_query('same')\nb = llm_query('same')\nFINAL(a + b)\n```"])
    res, trace = run(make_config(), "ctx", make_provider(srv))
    assert res.answer == "echo:sameecho:same"
    assert len([r for r in srv.chat_requests if not is_root(r)]) == 1
    subs = [s for s in trace if s.kind == SpanKind.SUB_CALL]
    assert [s.attributes[Attr.CACHE_HIT] for s in subs] == [False, True]
    assert subs[1].attributes[Attr.COST_USD] == 0.0
    n = len(srv.chat_requests)
    srv.handler = route(["```repl\na = llm_query('same')\nb = llm_query('same')\nFINAL(a + b)\n```"])
    run(make_config(memo_cache=False), "ctx", make_provider(srv))
    assert len([r for r in srv.chat_requests[n:] if not is_root(r)]) == 2


def test_429_with_retry_after_then_success_is_traced(srv: FakeOpenAI) -> None:
    srv.script(Reply.error(429, "rate limited", retry_after=1), "FINAL(ok after retry)")
    res, trace = run(make_config(), "ctx", make_provider(srv))
    assert res.status == "ok" and res.answer == "ok after retry"
    call = next(s for s in trace if s.kind == SpanKind.LLM_CALL)
    assert call.attributes[Attr.ATTEMPTS] == 2
    assert call.attributes[Attr.RETRIES][0]["wait_s"] == pytest.approx(1.0)


def test_max_iterations_limit_with_best_partial(srv: FakeOpenAI) -> None:
    srv.handler = route(["```repl\n1/0\n```\nFINAL(a guess)", "```repl\nprint(1)\n```",
                         "```repl\nprint(2)\n```"])
    res, trace = run(make_config(max_iterations=3), "ctx", make_provider(srv))
    assert (res.status, res.stop_reason) == ("limit", "max_iterations")
    assert res.answer == "a guess" and "max iterations reached (3)" in res.reason
    run_span = trace.roots[0]
    assert run_span.status == SpanStatus.BUDGET and run_span.attributes[Attr.STOP_REASON] == "max_iterations"


def test_limits_stop_with_distinct_reasons(srv: FakeOpenAI) -> None:
    reasons = {}
    loop_calls = "```repl\nfor i in range(50):\n    llm_query(f'q{i}')\n```"
    # max sub-calls
    srv.handler = route([loop_calls])
    res, trace = run(make_config(max_sub_calls=3), "ctx", make_provider(srv))
    assert (res.status, res.stop_reason, res.sub_calls) == ("limit", "max_sub_calls", 3)
    assert len([r for r in srv.chat_requests if not is_root(r)]) == 3
    assert_all_ended(trace)
    reasons["max_sub_calls"] = res.reason
    # USD budget: every call costs $0.001; the call that crosses $0.0025 stops the run after it
    price = ModelPrice(input=0.0, output=1000.0)
    srv.handler = route([loop_calls], sub=lambda r: Reply(text="x", usage={"prompt_tokens": 1, "completion_tokens": 1}))
    n0 = len(srv.chat_requests)
    res, trace = run(make_config(budget_usd=0.0025), "ctx",
                     make_provider(srv, prices={"fake-root": ModelPrice(0.0, 0.0), "fake-sub": price}))
    assert (res.status, res.stop_reason) == ("limit", "budget_usd")
    assert len(srv.chat_requests) - n0 == 4          # root + 3 sub-calls ($0.003 ≥ $0.0025)
    assert res.cost_usd == pytest.approx(0.003)
    assert trace.roots[0].status == SpanStatus.BUDGET
    reasons["budget_usd"] = res.reason
    # token budget
    srv.handler = route([loop_calls], sub=lambda r: Reply(text="x", usage={"prompt_tokens": 40, "completion_tokens": 10}))
    res, _ = run(make_config(max_tokens=1000), "ctx", make_provider(srv))
    assert (res.status, res.stop_reason) == ("limit", "max_tokens")
    assert res.input_tokens + res.output_tokens >= 1000
    reasons["max_tokens"] = res.reason
    # run wall time: the root model hangs
    srv.handler = route([Reply.hanging()])
    res, trace = run(make_config(run_timeout_s=1.0), "ctx", make_provider(srv))
    assert (res.status, res.stop_reason) == ("limit", "run_timeout")
    assert trace.roots[0].status == SpanStatus.TIMEOUT
    assert srv.wait_until(lambda s: s.open_now == 0, timeout=5)
    reasons["run_timeout"] = res.reason
    # per-call timeout (no retries): a provider error naming the timeout
    srv.handler = route([Reply(text="late", delay=3)])
    res, _ = run(make_config(call_timeout_s=0.5), "ctx", make_provider(srv, max_retries=0))
    assert (res.status, res.stop_reason) == ("error", "call_timeout")
    reasons["call_timeout"] = res.reason
    # max depth: no rlm_query at depth 0 when max_depth is 0
    srv.handler = route(["```repl\nrlm_query('x')\n```", "FINAL(without recursion)"])
    res, _ = run(make_config(max_depth=0), "ctx", make_provider(srv))
    assert res.status == "ok"
    assert "rlm_query` is not available here (maximum recursion depth 0" in _root_requests(srv)[-2].system
    assert "maximum nesting depth" in _root_requests(srv)[-1].last_user
    assert reasons["max_sub_calls"].startswith("max sub-calls reached")
    assert reasons["budget_usd"].startswith("USD budget reached")
    assert reasons["max_tokens"].startswith("token budget reached")
    assert reasons["run_timeout"].startswith("run time limit reached")
    assert "did not answer within 0.5 s" in reasons["call_timeout"]


def test_cancel_during_batch_leaves_no_request_open(srv: FakeOpenAI) -> None:
    srv.handler = route(["```repl\nllm_query_batched(['a', 'b', 'c', 'd'])\n```"],
                        sub=lambda r: Reply.hanging())
    cancel = CancelToken()
    boxes: dict[int, int] = {}

    def canceller() -> None:
        if srv.wait_until(lambda s: s.open_now >= 4, timeout=20):
            boxes.update(pidfds(sandbox_processes(os.getpid())))
            cancel.cancel("user pressed stop")
    t = threading.Thread(target=canceller)
    t.start()
    res, trace = run(make_config(), "ctx", make_provider(srv), cancel=cancel)
    t.join()
    assert (res.status, res.stop_reason, res.reason) == ("cancelled", "cancelled", "user pressed stop")
    assert boxes, "no sandbox process was found while the cell ran"
    assert still_alive_after(boxes, 10) == set(), "sandbox processes outlived Stop"
    assert srv.max_open == 4
    assert srv.wait_until(lambda s: s.open_now == 0, timeout=5), "requests left open after cancel"
    assert_all_ended(trace)
    assert trace.roots[0].status == SpanStatus.CANCELLED
    subs = [s for s in trace if s.kind == SpanKind.SUB_CALL]
    assert len(subs) == 4 and all(s.status == SpanStatus.CANCELLED for s in subs)


def test_stop_kills_a_spinning_cell_at_once_even_while_the_engine_loop_is_busy(srv: FakeOpenAI) -> None:
    """Stop comes from another thread (the GUI's); the token's callback must kill the sandbox then
    and there, not when the engine loop gets round to it (it may be busy: here it is held)."""
    import asyncio

    from rlm_desktop.engine.providers import aclose_clients
    from rlm_desktop.engine.run import run_rlm

    srv.handler = route(["```repl\nprint('spinning', flush=True)\nwhile True: pass\n```"])
    trace = Trace({})
    spinning, busy, release = threading.Event(), threading.Event(), threading.Event()
    trace.subscribe(lambda ev, span: spinning.set()
                    if ev.append and "spinning" in str(ev.append.get(Attr.STDOUT, "")) else None)
    cancel = CancelToken()
    loops: list[asyncio.AbstractEventLoop] = []
    results: list[RunResult] = []

    def engine() -> None:
        async def go() -> RunResult:
            loops.append(asyncio.get_running_loop())
            try:
                return await run_rlm(make_config(cell_timeout_s=300), "ctx", provider=make_provider(srv),
                                     trace=trace, cancel=cancel)
            finally:
                await aclose_clients()
        results.append(asyncio.run(go()))
    t = threading.Thread(target=engine, daemon=True)
    t.start()
    try:
        assert spinning.wait(30), "the spinning cell never started"
        boxes = pidfds(sandbox_processes(os.getpid()))
        assert boxes, "no sandbox process was found while the cell ran"

        def hold() -> None:
            busy.set()
            release.wait(60)
        loops[0].call_soon_threadsafe(hold)
        assert busy.wait(10)
        cancel.cancel("user pressed stop")          # from this thread, as the GUI does
        left = still_alive_after(boxes, 10)
    finally:
        release.set()
        t.join(60)
    assert left == set(), f"sandbox processes {sorted(left)} outlived Stop while the engine loop was busy"
    assert results and (results[0].status, results[0].reason) == ("cancelled", "user pressed stop")
    assert sandbox_processes(os.getpid()) == set()
    assert_all_ended(trace)


def test_api_key_not_in_trace_nor_in_the_repl_environment(
        srv: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    srv.handler = route([
        "```repl\nimport os\nprint(sorted(os.environ.items()))\nprint(llm_query('ping'))\n```",
        "FINAL(checked)"])
    trace = Trace({})
    path = tmp_path / "trace.jsonl"
    TraceWriter(path, {"query": "q"}).attach(trace)
    res, _ = run(make_config(), "ctx", make_provider(srv, key=TEST_KEY), trace=trace)
    assert res.status == "ok"
    assert all(r.authorization == f"Bearer {TEST_KEY}" for r in srv.chat_requests)
    env_dump = _root_requests(srv)[1].last_user
    assert "echo:ping" in env_dump and "PATH" in env_dump
    assert TEST_KEY not in env_dump and "OPENAI_API_KEY" not in env_dump
    assert TEST_KEY not in path.read_text()


def test_history_is_shortened_and_said_so(srv: FakeOpenAI) -> None:
    big = "```repl\nprint('z' * 6000)\n```"
    srv.handler = route([big, big, big, big, "FINAL(done)"])
    res, trace = run(make_config(max_history_chars=12000), "ctx", make_provider(srv))
    assert res.status == "ok"
    last = _root_requests(srv)[-1]
    assert any("older output shortened" in str(m["content"]) for m in last.messages)
    assert last.messages[0]["role"] == "system" and last.messages[1]["content"].startswith("Question:")
    noted = [s for s in trace if s.kind == SpanKind.LLM_CALL and s.attributes.get(Attr.HISTORY_NOTE)]
    assert noted and noted[0].attributes.get(Attr.HISTORY_FROM) is None
    for s in trace:
        if s.kind == SpanKind.LLM_CALL and s.attributes[Attr.MODEL] == "fake-root":
            assert len(trace.messages_for(s.id)) == s.attributes[Attr.MESSAGE_COUNT]


def test_demo_provider_runs_the_whole_machine() -> None:
    from rlm_desktop.core.config import RunConfig, SandboxLimits
    from rlm_desktop.engine.demo import DEMO_PROVIDER

    ctx = {"a.txt": "Intro line. The launch date is March 3. Unrelated.", "b.txt": "Nothing here."}
    cfg = RunConfig(query="When is the launch date?", root_model="demo-root", sub_model="demo-sub",
                    sandbox=SandboxLimits(allow_weak=True))
    res, trace = run(cfg, ctx, DEMO_PROVIDER)
    assert res.status == "ok" and "The launch date is March 3." in res.answer
    assert res.answer.startswith("Offline demo") and res.cost_usd == 0.0 and res.cost_known
    assert res.tokens_estimated and res.sub_calls >= 1
    assert trace.roots[0].attributes[Attr.DEMO] is True
    assert {"run", "iteration", "llm_call", "code_cell", "sub_call", "final"} <= _kinds(trace)
    res2, _ = run(cfg, ctx, DEMO_PROVIDER)
    assert res2.answer == res.answer                      # deterministic


def test_response_and_cell_output_stream_live_as_coalesced_updates(srv: FakeOpenAI) -> None:
    code = ("```repl\nimport time\nfor i in range(5):\n    print('tick', i, flush=True)\n"
            "    time.sleep(0.2)\n```")
    srv.handler = route([Reply(text=code, chunk_size=2, chunk_delay=0.02), "FINAL(done)"])
    trace = Trace({})
    appends: dict[str, list[str]] = {"response": [], "stdout": []}
    ended: set[str] = set()

    def listen(ev, span) -> None:  # noqa: ANN001 - trace listener signature
        if ev.append and span.id not in ended:
            for key in appends:
                if key in ev.append:
                    appends[key].append(ev.append[key])
        if ev.status is not None:
            ended.add(span.id)
    trace.subscribe(listen)
    res, _ = run(make_config(), "ctx", make_provider(srv), trace=trace)
    assert res.answer == "done"
    chunks = len(code) // 2
    assert 2 <= len(appends["response"]) < chunks / 2      # live, yet far fewer updates than chunks
    assert "".join(appends["response"]).startswith(code[:20])
    assert len(appends["stdout"]) >= 2                      # output seen while the cell still ran
    assert "".join(appends["stdout"]) == "".join(f"tick {i}\n" for i in range(5))


def test_cancelling_the_task_or_a_cancelled_token_ends_every_span(srv: FakeOpenAI) -> None:
    import asyncio

    from rlm_desktop.engine.providers import aclose_clients
    from rlm_desktop.engine.run import run_rlm

    srv.handler = route(["```repl\nllm_query('x')\n```"], sub=lambda r: Reply.hanging())
    trace = Trace({})

    boxes: dict[int, int] = {}

    async def cancel_the_task() -> bool:
        task = asyncio.ensure_future(run_rlm(make_config(), "ctx", provider=make_provider(srv), trace=trace))
        while srv.open_now == 0:
            await asyncio.sleep(0.01)
        boxes.update(pidfds(sandbox_processes(os.getpid())))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        finally:
            await aclose_clients()
        return False
    assert asyncio.run(cancel_the_task()), "an outside task cancel must propagate"
    assert boxes and still_alive_after(boxes, 10) == set(), "sandbox processes outlived the cancel"
    assert_all_ended(trace)
    assert trace.roots[0].status == SpanStatus.CANCELLED
    assert srv.wait_until(lambda s: s.open_now == 0, timeout=5)
    token = CancelToken()
    token.cancel("stopped before it started")
    n = len(srv.chat_requests)
    res, trace2 = run(make_config(), "ctx", make_provider(srv), cancel=token)
    assert (res.status, res.reason) == ("cancelled", "stopped before it started")
    assert len(srv.chat_requests) == n
    assert_all_ended(trace2)


def test_async_variants_and_threads_in_a_cell_run_sub_calls_concurrently(srv: FakeOpenAI) -> None:
    srv.handler = route([
        "```repl\nimport asyncio\nr = await asyncio.gather(llm_query_async('a'), llm_query_async('b'))\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(3) as ex:\n    t = list(ex.map(llm_query, ['c', 'd', 'e']))\n"
        "FINAL(' '.join(r + t))\n```"],
        sub=lambda r: Reply(text=r.last_user.upper(), delay=0.3))
    res, trace = run(make_config(), "ctx", make_provider(srv))
    assert res.answer == "A B C D E" and res.sub_calls == 5
    assert srv.max_open == 3
    long_prompt = "p" * 5000
    srv.handler = route([f"```repl\nFINAL(llm_query('{long_prompt}'))\n```"])
    res, trace = run(make_config(), "ctx", make_provider(srv))
    sub = next(s for s in trace if s.kind == SpanKind.SUB_CALL)
    assert sub.attributes["prompt_chars"] == 5000 and len(sub.attributes[Attr.PROMPT]) < 2100
    call = next(c for c in sub.children if c.kind == SpanKind.LLM_CALL)
    assert call.attributes[Attr.MESSAGES][0]["content"] == long_prompt


def test_answer_cut_mid_stream_is_retried_and_traced_whole(srv: FakeOpenAI) -> None:
    srv.script(Reply(text="FINAL(the first, cut answer)", chunk_size=5, drop_after=2), "FINAL(whole)")
    res, trace = run(make_config(), "ctx", make_provider(srv))
    assert res.status == "ok" and res.answer == "whole"
    call = next(s for s in trace if s.kind == SpanKind.LLM_CALL)
    assert call.attributes[Attr.RESPONSE] == "FINAL(whole)" and call.attributes[Attr.ATTEMPTS] == 2


def test_unexpected_failure_still_ends_the_trace(srv: FakeOpenAI) -> None:
    res, trace = run(make_config(), {"a.txt": 12345}, make_provider(srv))  # type: ignore[dict-item]
    assert (res.status, res.stop_reason) == ("error", "internal_error")
    assert "context must map str to str" in res.reason
    assert_all_ended(trace)
    assert trace.roots[0].status == SpanStatus.ERROR and srv.chat_requests == []


def test_textual_final_of_a_bare_name_reads_the_variable_when_it_exists(srv: FakeOpenAI) -> None:
    srv.handler = route(["```repl\nresult = 'computed ' + str(6 * 7)\n```", "FINAL(result)"])
    res, _ = run(make_config(), "ctx", make_provider(srv))
    assert res.answer == "computed 42"
    srv.handler = route(["FINAL(yes)"])
    res, _ = run(make_config(), "ctx", make_provider(srv))
    assert res.answer == "yes"
    srv.handler = route(["FINAL(context)"])
    res, _ = run(make_config(), "the documents", make_provider(srv))
    assert res.answer == "context"


@pytest.mark.parametrize(("finish", "told_says"), [("length", "cut off at the output-token limit"),
                                                    ("content_filter", "content filter")])
def test_reply_cut_inside_code_does_not_run(srv: FakeOpenAI, finish: str, told_says: str) -> None:
    # the token limit or the provider's content filter stopped the reply inside its second block
    srv.handler = route([Reply(text="```repl\nprint('ran')\n```\n```repl\nx = [1, 2,", finish_reason=finish),
                         "FINAL(fine)"])
    res, trace = run(make_config(), "ctx", make_provider(srv))
    assert res.answer == "fine"
    told = _root_requests(srv)[1].last_user
    assert "ran" in told and told_says in told
    assert [s.attributes[Attr.CODE] for s in trace if s.kind == SpanKind.CODE_CELL][0] == "print('ran')"
    assert not any("x = [1, 2," in str(s.attributes.get(Attr.CODE)) for s in trace)


def test_nested_run_cut_by_its_cell_ending_ends_its_spans_at_once(srv: FakeOpenAI) -> None:
    # The cell ends (its code returns) while a thread's rlm_query is still in flight: the host
    # cancels the sub-call, and the nested run must close every span at once. (Waiting for a
    # sub-call does not count toward the cell timeout, so the cell's own end is what cuts it.)
    cell = ("import threading, time\n"
            "threading.Thread(target=rlm_query, args=('slow nested task',), daemon=True).start()\n"
            "time.sleep(0.8)")

    def handler(r: Request) -> Reply | str:
        if "nested run at depth 1" in r.system:
            return Reply.hanging()
        step = sum(1 for m in r.messages if m["role"] == "assistant")
        return f"```repl\n{cell}\n```" if step == 0 else "FINAL(moved on)"
    srv.handler = handler
    trace = Trace({})
    open_after_cell: list[str] = []

    def listen(ev, span) -> None:  # noqa: ANN001 - trace listener signature
        if span.kind == SpanKind.CODE_CELL and ev.status is not None:
            open_after_cell.extend(f"{s.kind}:{s.name}" for s in trace if s.running
                                   and s.attributes.get(Attr.DEPTH, 0) >= 1)
    trace.subscribe(listen)
    res, _ = run(make_config(cell_timeout_s=1.0), "ctx", make_provider(srv), trace=trace)
    assert res.answer == "moved on"
    assert open_after_cell == []             # nothing of the nested run was left running
    nested = next(s for s in trace if s.kind == SpanKind.RUN and s.attributes[Attr.DEPTH] == 1)
    assert nested.status == SpanStatus.CANCELLED
    assert srv.wait_until(lambda s: s.open_now == 0, timeout=5)
