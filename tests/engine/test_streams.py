"""Broken provider streams (issue 8, items 5-8), through the real openai SDK and the real CLI.

The fault server (tests/faultserver.py) sends what broken gateways and runaway models send, byte by
byte: event streams that are not JSON, JSON of the wrong shape, no choices, HTML with status 200,
streams cut without their terminator (inside a code block, too), streams that never end.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter, read_trace
from rlm_desktop.engine.providers import ProviderError, aclose_clients, chat
from rlm_desktop.engine.run import FAILED_REPLY_KEEP_CHARS, LIVE_RESPONSE_CHARS
from tests.engine.conftest import assert_all_ended, make_config, make_provider, run
from tests.faultserver import (
    Behaviour,
    FaultServer,
    cut_mid_code,
    cut_stream,
    endless,
    endless_line,
    error_event,
    garbage_events,
    gzip_endless_line,
    gzipped,
    malformed_sse,
    no_choices,
    non_json_200,
    odd_sse,
    ok,
    reset,
    slow,
    two_choices,
    wrong_shape_json,
)

ROOT = Path(__file__).resolve().parents[2]
MSGS = [{"role": "user", "content": "hello"}]

MALFORMED = {"malformed_sse": malformed_sse, "garbage_events": garbage_events,
             "wrong_shape_json": wrong_shape_json}
UNUSABLE = {"no_choices": no_choices, "non_json_200": non_json_200}


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def _chat(server: FaultServer, *, max_retries: int = 2, stream: bool = True,
          **kw: Any) -> tuple[Any, list[tuple[int, str, float]], list[str]]:
    """(result or ProviderError, retries seen, deltas seen) of one chat() through the real SDK."""
    retries: list[tuple[int, str, float]] = []
    deltas: list[str] = []

    async def go() -> Any:
        try:
            return await chat(make_provider(server, max_retries=max_retries), "fake-root", MSGS,  # type: ignore[arg-type]
                              timeout_s=kw.pop("timeout_s", 30), stream=stream,
                              on_delta=deltas.append,
                              on_retry=lambda a, e, w: retries.append((a, e, w)), **kw)
        except ProviderError as exc:
            return exc
        finally:
            await aclose_clients()
    return asyncio.run(go()), retries, deltas


# -- items 5 and 6: a 200 that is not a usable chat completion is a provider fault ---------------

@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "non-streamed"])
@pytest.mark.parametrize("name", [*MALFORMED, *UNUSABLE])
def test_an_unusable_200_is_retried_and_the_next_good_answer_used(fault: FaultServer, name: str,
                                                                  stream: bool) -> None:
    behaviour = {**MALFORMED, **UNUSABLE}[name]()
    fault.script(behaviour, ok("the real answer"))
    res, retries, deltas = _chat(fault, stream=stream)
    assert not isinstance(res, BaseException), res
    assert res.text == "the real answer" and res.attempts == 2
    assert len(retries) == 1 and fault.base_url in retries[0][1]
    assert "".join(deltas).endswith("the real answer")
    assert len(fault.chat_requests) == 2


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "non-streamed"])
def test_malformed_streams_give_up_as_a_provider_error_naming_the_server(fault: FaultServer,
                                                                         stream: bool) -> None:
    fault.script(malformed_sse(), garbage_events(), wrong_shape_json())
    err, retries, _ = _chat(fault, stream=stream)
    assert isinstance(err, ProviderError), err
    assert err.kind == "bad_response" and err.attempts == 3 and len(retries) == 2
    msg = str(err)
    assert msg.startswith(f"Fake server ({fault.base_url}) ") and "(gave up after 3 attempts)" in msg
    assert "JSONDecodeError" not in msg and "not an OpenAI-compatible answer" in msg
    assert ("not JSON" if stream else "not valid JSON") in retries[0][1]   # what each attempt got
    assert ("not UTF-8" if stream else "not valid JSON") in retries[1][1]
    assert "without a list of choices" in msg


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "non-streamed"])
def test_no_choices_and_an_html_200_give_up_as_provider_errors(fault: FaultServer, stream: bool) -> None:
    fault.script(no_choices(), no_choices())
    err, _, _ = _chat(fault, stream=stream, max_retries=1)
    assert isinstance(err, ProviderError) and err.kind == "bad_response" and err.attempts == 2
    assert "no choices" in str(err) or "without any choices" in str(err)
    fault.script(non_json_200(), non_json_200())
    err, _, _ = _chat(fault, stream=stream, max_retries=1)
    assert isinstance(err, ProviderError) and err.kind == "bad_response"
    assert "text/html" in str(err) and "Please sign in" in str(err)
    assert "check that the base URL points at the API" in str(err)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "non-streamed"])
def test_usage_of_the_wrong_shape_is_estimated_not_a_crash(fault: FaultServer, stream: bool) -> None:
    fault.script(ok("fine", usage={"prompt_tokens": "many", "completion_tokens": [1]}),
                 ok("also fine", usage="lots"))
    for text in ("fine", "also fine"):
        res, _, _ = _chat(fault, stream=stream)
        assert not isinstance(res, BaseException), res
        assert res.text == text and res.tokens_estimated and res.output_tokens == max(1, len(text) // 4)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "non-streamed"])
def test_an_error_sent_with_status_200_is_a_retried_server_error(fault: FaultServer, stream: bool) -> None:
    fault.script(error_event("Overloaded, try later"), ok("after the error"))
    res, retries, _ = _chat(fault, stream=stream)
    assert not isinstance(res, BaseException), res
    assert res.text == "after the error" and res.attempts == 2
    assert "reported an error" in retries[0][1] and "Overloaded, try later" in retries[0][1]


def test_only_the_first_choice_is_the_reply(fault: FaultServer) -> None:
    fault.script(two_choices("print(1)", "import os; os.remove('x')"))
    res, _, _ = _chat(fault)
    assert not isinstance(res, BaseException), res
    assert res.text == "print(1)"


# -- item 7: a stream without its terminator is a cut reply ----------------------------------------

def test_a_stream_cut_without_terminator_is_retried_not_returned(fault: FaultServer) -> None:
    fault.script(cut_stream("The answer is fort"), ok("The answer is forty-two."))
    res, retries, _ = _chat(fault)
    assert not isinstance(res, BaseException), res
    assert res.text == "The answer is forty-two." and res.attempts == 2
    assert "cut short" in retries[0][1] and "no finish_reason, no [DONE]" in retries[0][1]
    fault.script(cut_stream(), cut_stream(), cut_stream())
    err, _, _ = _chat(fault)
    assert isinstance(err, ProviderError) and err.kind == "cut" and err.attempts == 3
    assert str(err).startswith(f"Fake server ({fault.base_url}) stopped the reply after")
    assert "raise the server's or the proxy's time limit" in str(err)


def test_a_stream_with_one_of_its_two_terminators_is_complete(fault: FaultServer) -> None:
    # Servers differ: some send finish_reason and close without [DONE], some the other way round.
    fault.script(ok("no [DONE] here", done=False), ok("no finish_reason here", finish_reason=None),
                 ok("[DONE] in two packets", finish_reason=None, split_done=True))
    for text in ("no [DONE] here", "no finish_reason here", "[DONE] in two packets"):
        res, retries, _ = _chat(fault)
        assert not isinstance(res, BaseException), res
        assert res.text == text and res.attempts == 1 and retries == []


# -- the event stream is read by our decoder (engine/sse.py), not the SDK's ------------------------

UNICODE_TEXT = "héllo wörld 🙂 naïve ∑ — done"


def test_other_sse_forms_split_byte_by_byte_are_read_whole(fault: FaultServer) -> None:
    # CRLF, data: without the space, comments, event:/id:/retry: lines, JSON over several data:
    # lines, raw UTF-8, data:[DONE]; one byte per TCP write, so reads split lines, CRLFs and
    # characters. The ids with comments between events also failed with the SDK's decoder.
    fault.script(odd_sse(UNICODE_TEXT))
    res, retries, deltas = _chat(fault)
    assert not isinstance(res, BaseException), res
    assert res.text == UNICODE_TEXT and "".join(deltas) == UNICODE_TEXT
    assert res.attempts == 1 and retries == [] and res.finish_reason == "stop"


def test_a_gzipped_stream_is_read_and_its_done_counts(fault: FaultServer) -> None:
    # the second has no finish_reason: [DONE] inside the compressed body is its terminator (the
    # raw-byte watch could not see it there and called the reply cut)
    fault.script(gzipped(UNICODE_TEXT), gzipped("only [DONE] ends this one", finish_reason=None))
    for text in (UNICODE_TEXT, "only [DONE] ends this one"):
        res, retries, _ = _chat(fault)
        assert not isinstance(res, BaseException), res
        assert res.text == text and res.attempts == 1 and retries == []


def test_usage_and_the_served_model_are_read_from_the_stream(fault: FaultServer) -> None:
    fault.script(ok("counted", usage={"prompt_tokens": 11, "completion_tokens": 3,
                                      "prompt_tokens_details": {"cached_tokens": 5}}))
    res, _, _ = _chat(fault)
    assert not isinstance(res, BaseException), res
    assert (res.input_tokens, res.output_tokens, res.cached_tokens) == (11, 3, 5)
    assert not res.tokens_estimated and res.model == "fake-root" and res.finish_reason == "stop"


def test_streamed_replies_keep_their_connection(fault: FaultServer) -> None:
    # after [DONE] the rest of the body is read, so HTTP/1.1 keep-alive reuses the connection
    fault.script(ok("one"), ok("two"), ok("three"))
    provider = make_provider(fault)  # type: ignore[arg-type]

    async def go() -> list[str]:
        try:
            return [(await chat(provider, "m", MSGS, timeout_s=30)).text for _ in range(3)]
        finally:
            await aclose_clients()
    assert asyncio.run(go()) == ["one", "two", "three"]
    assert fault.connections == 1


def test_a_reset_connection_is_retried_and_says_what_happened(fault: FaultServer) -> None:
    fault.script(reset(), reset())
    err, retries, _ = _chat(fault, max_retries=1)
    assert isinstance(err, ProviderError) and err.kind == "connection"
    assert "closed or reset by the server" in retries[0][1]
    fault.script(reset(), slow("after the reset"))
    res, _, _ = _chat(fault)
    assert not isinstance(res, BaseException) and res.text == "after the reset"


def test_cut_reply_code_never_runs_and_the_run_succeeds_after_the_retry(fault: FaultServer) -> None:
    marker = "CUT-MARKER-5d1f"
    half = marker[:4]
    cut_code = f"print({half!r} + {marker[4:]!r})\nwith open('x', 'w') as f:\n    f.write("
    fault.script(cut_mid_code(cut_code), ok("```repl\nprint('whole reply ran')\n```"),
                 ok("FINAL(done)"))
    res, trace = run(make_config(), "doc", make_provider(fault))   # type: ignore[arg-type]
    assert res.status == "ok" and res.answer == "done", res.reason
    assert_all_ended(trace)
    cells = [s for s in trace if s.kind == SpanKind.CODE_CELL]
    assert cells[0].attributes[Attr.STDOUT] == "whole reply ran\n"
    assert all(marker not in c.attributes.get(Attr.STDOUT, "") for c in cells)
    assert all(half not in c.attributes[Attr.CODE] for c in cells)
    first = next(s for s in trace if s.kind == SpanKind.LLM_CALL)
    (retry,) = first.attributes[Attr.RETRIES]
    assert "cut short" in retry["error"] and cut_code[:20] in retry["response"]
    assert first.attributes[Attr.RESPONSE] == "```repl\nprint('whole reply ran')\n```"


# -- item 6 in a run: no choices is not an answer the run bills and feeds back -------------------

def test_a_run_given_no_choices_stops_with_a_provider_error_not_twenty_empty_turns(
        fault: FaultServer) -> None:
    fault.handler = lambda req: no_choices()
    res, trace = run(make_config(max_iterations=20), "doc", make_provider(fault, max_retries=1))  # type: ignore[arg-type]
    assert res.status == "error" and res.stop_reason == "provider_error"
    assert res.iterations == 1 and (res.input_tokens, res.output_tokens) == (0, 0)
    assert len(fault.chat_requests) == 2
    assert "without any choices" in (res.reason or "") and fault.base_url in (res.reason or "")
    assert trace.roots[0].status == SpanStatus.ERROR


# -- item 8: every reply is bounded ---------------------------------------------------------------

def test_an_endless_stream_stops_at_the_cap_without_retry(fault: FaultServer) -> None:
    fault.script(endless(), ok("never asked for"))
    err, retries, deltas = _chat(fault, max_response_chars=20_000)
    assert isinstance(err, ProviderError) and err.kind == "too_long" and err.attempts == 1, err
    assert retries == [] and len(fault.chat_requests) == 1
    assert "longer than 20,000 characters" in str(err) and "--max-response-chars" in str(err)
    assert "Settings → Limits" in str(err)
    assert sum(map(len, deltas)) == 20_000                    # the caller never sees more
    assert fault.wait_until(lambda s: len(s.served) == 1 and s.open_now == 0, timeout=10)
    assert fault.served[0][2] == "client"                     # we hung up, not the server


@pytest.mark.parametrize("behaviour", [endless_line(max_s=30), endless(max_s=30)],
                         ids=["one-endless-line", "non-streamed-endless-body"])
def test_a_reply_that_grows_without_text_is_bounded_in_bytes(fault: FaultServer,
                                                              behaviour: Behaviour) -> None:
    fault.script(behaviour)
    stream = behaviour.name == "endless_line"
    err, _, _ = _chat(fault, stream=stream, max_response_chars=1000)
    assert isinstance(err, ProviderError) and err.kind == "too_long", err
    assert "more than 32 MB for one reply" in str(err) and "--max-response-chars" in str(err)
    assert fault.wait_until(lambda s: len(s.served) == 1, timeout=10)
    name, sent, end = fault.served[0]
    assert end == "client" and sent < 200_000_000


def test_a_gzip_compressed_endless_line_is_bounded_by_the_text_it_decodes_to(fault: FaultServer) -> None:
    # ~1 KB on the wire per MB of text: a bound on socket bytes would take ~32 GB of text (and of
    # memory) to reach; the bound on decoded bytes stops it after 32 MB, long before the time limit
    fault.script(gzip_endless_line(max_s=60))
    err, _, _ = _chat(fault, max_response_chars=1000)
    assert isinstance(err, ProviderError) and err.kind == "too_long", err
    assert "more than 32 MB for one reply" in str(err)
    assert fault.wait_until(lambda s: len(s.served) == 1, timeout=10)
    _, sent, end = fault.served[0]
    assert end == "client" and sent < 1_000_000           # stopped by us, after well under 1 MB sent


def test_a_failed_attempt_is_kept_in_the_trace_only_up_to_a_bound(fault: FaultServer,
                                                                  tmp_path: Path) -> None:
    long_text = "x" * 300_000
    fault.script(cut_stream(long_text, chunk_size=1000), ok("FINAL(ok)"))
    path = tmp_path / "t.jsonl"
    trace = Trace({"query": "q"})
    writer = TraceWriter(path, {"query": "q"})
    writer.attach(trace)
    try:
        res, _ = run(make_config(), "doc", make_provider(fault), trace=trace)   # type: ignore[arg-type]
    finally:
        writer.close()
    assert res.status == "ok" and res.answer == "ok"
    call = next(s for s in read_trace(path) if s.kind == SpanKind.LLM_CALL)
    (retry,) = call.attributes[Attr.RETRIES]
    assert retry["response_chars"] == 300_000
    assert retry["response"].startswith("x" * FAILED_REPLY_KEEP_CHARS)
    assert "290,000 more characters of this failed attempt not kept" in retry["response"]
    assert call.attributes[Attr.RESPONSE] == "FINAL(ok)"
    assert path.stat().st_size < LIVE_RESPONSE_CHARS + FAILED_REPLY_KEEP_CHARS + 40_000


# -- end to end through the CLI --------------------------------------------------------------------

def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "rlm_desktop", "run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "report.txt").write_text("The launch date is March 3.\n")
    return d


def test_cli_malformed_and_unusable_replies_exit_5_naming_the_server(fault: FaultServer, docs: Path,
                                                                    tmp_path: Path) -> None:
    # the CLI's provider retries 4 times: five attempts, five different faults
    fault.script(malformed_sse(), garbage_events(), wrong_shape_json(), no_choices(), non_json_200())
    trace_file = tmp_path / "bad.jsonl"
    r = _cli("--docs", str(docs), "--query", "q", "--base-url", fault.base_url, "--model", "m",
             "--trace", str(trace_file), "--json", "--allow-weak-sandbox")
    assert r.returncode == 5, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert "JSONDecodeError" not in r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "error" and out["stop_reason"] == "provider_error"
    assert out["iterations"] == 1
    # only the attempt that streamed reply text ("Let me look", then a broken line) was billed:
    # its prompt and its 11 characters, estimated; the four that sent no text cost nothing
    assert out["output_tokens"] == 2 and 0 < out["input_tokens"] < 1000
    final = r.stderr.strip().splitlines()[-1]
    assert final.startswith(f"rlm-desktop run: provider error: {fault.base_url} answered 200 with "
                            "text/html instead of an event stream")
    assert "gave up after 5 attempts" in final and "check that the base URL points at the API" in final
    for what in ("not JSON", "not UTF-8", "without a list of choices", "without any choices"):
        assert what in r.stderr                               # each retry said what was wrong
    assert len(fault.chat_requests) == 5
    assert read_trace(trace_file).roots[0].status == SpanStatus.ERROR


def test_cli_cut_reply_is_retried_and_its_code_never_runs(fault: FaultServer, docs: Path,
                                                          tmp_path: Path) -> None:
    fault.script(cut_mid_code("print('CUT-' + 'MARKER-e2e')\nimport os\nos.remove("),
                 ok("```repl\nprint('complete')\n```"), ok("FINAL(March 3)"))
    trace_file = tmp_path / "cut.jsonl"
    r = _cli("--docs", str(docs), "--query", "When?", "--base-url", fault.base_url, "--model", "m",
             "--trace", str(trace_file), "--allow-weak-sandbox")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "March 3"
    assert "attempt 1 failed" in r.stderr and "cut short" in r.stderr
    text = trace_file.read_text()
    assert "CUT-MARKER-e2e" not in text and "CUT-MARKER-e2e" not in r.stdout + r.stderr
    cells = [s for s in read_trace(trace_file) if s.kind == SpanKind.CODE_CELL]
    assert [c.attributes[Attr.STDOUT] for c in cells] == ["complete\n"]


def test_cli_endless_stream_exits_5_with_a_small_trace_and_says_how_to_raise_the_cap(
        fault: FaultServer, docs: Path, tmp_path: Path) -> None:
    fault.script(endless(max_s=60))
    trace_file = tmp_path / "endless.jsonl"
    r = _cli("--docs", str(docs), "--query", "q", "--base-url", fault.base_url, "--model", "m",
             "--trace", str(trace_file), "--allow-weak-sandbox")
    assert r.returncode == 5, r.stderr
    final = r.stderr.strip().splitlines()[-1]
    assert final.startswith(f"rlm-desktop run: provider error: {fault.base_url} sent a reply longer "
                            "than 1,000,000 characters")
    assert "not retried" in final and "raise the cap: --max-response-chars" in final
    assert len(fault.chat_requests) == 1
    assert trace_file.stat().st_size < 200_000                 # was 906 MB within 40 s
    call = next(s for s in read_trace(trace_file) if s.kind == SpanKind.LLM_CALL)
    assert call.attributes["response_chars"] == 1_000_000
    assert len(call.attributes[Attr.RESPONSE]) < FAILED_REPLY_KEEP_CHARS + 200
    assert fault.wait_until(lambda s: len(s.served) == 1, timeout=10)
    assert fault.served[0][2] == "client"


def test_cli_max_response_chars_flag(fault: FaultServer, docs: Path, tmp_path: Path) -> None:
    r = _cli("--docs", str(docs), "--query", "q", "--max-response-chars", "0", "--provider", "demo")
    assert r.returncode == 2 and "--max-response-chars must be greater than 0" in r.stderr
    fault.script(endless(max_s=60))
    r = _cli("--docs", str(docs), "--query", "q", "--base-url", fault.base_url, "--model", "m",
             "--max-response-chars", "5000", "--json", "--allow-weak-sandbox")
    assert r.returncode == 5, r.stderr
    assert "longer than 5,000 characters" in json.loads(r.stdout)["reason"]


# -- failed attempts that streamed a reply were billed: they count toward tokens, cost, budget -----

def test_a_cut_attempt_counts_in_the_calls_tokens_and_cost_as_an_estimate(fault: FaultServer) -> None:
    from rlm_desktop.core.config import ModelPrice
    from rlm_desktop.core.totals import totals

    long_text = "y" * 40_000                          # ~10,000 output tokens the provider generated
    fault.script(cut_stream(long_text, chunk_size=1000), ok("FINAL(ok)"))
    prices = {"fake-root": ModelPrice(1.0, 10.0)}   # $ per million tokens: input, output
    res, trace = run(make_config(), "doc", make_provider(fault, prices=prices))   # type: ignore[arg-type]
    assert res.status == "ok" and res.answer == "ok"
    call = next(s for s in trace if s.kind == SpanKind.LLM_CALL)
    (retry,) = call.attributes[Attr.RETRIES]
    assert retry["output_tokens"] == 10_000 and retry["input_tokens"] > 0 and retry["tokens_estimated"]
    assert retry["cost_usd"] == pytest.approx((retry["input_tokens"] * 1.0 + 10_000 * 10.0) / 1e6)
    a = call.attributes
    assert a[Attr.OUTPUT_TOKENS] > 10_000 and a[Attr.TOKENS_ESTIMATED] is True
    assert a[Attr.COST_USD] > retry["cost_usd"]                     # the good attempt on top
    t = totals(trace)
    assert (res.output_tokens, res.cost_usd) == (t.output_tokens, pytest.approx(t.cost_usd))
    assert res.output_tokens >= 10_000 and res.tokens_estimated


def test_a_call_that_fails_for_good_after_streaming_still_counts_what_was_billed(fault: FaultServer) -> None:
    fault.script(cut_stream("z" * 8_000, chunk_size=1000), cut_stream("z" * 8_000, chunk_size=1000))
    res, trace = run(make_config(), "doc", make_provider(fault, max_retries=1))   # type: ignore[arg-type]
    assert res.status == "error" and res.stop_reason == "provider_error"
    call = next(s for s in trace if s.kind == SpanKind.LLM_CALL)
    assert call.status == SpanStatus.ERROR
    assert call.attributes[Attr.OUTPUT_TOKENS] == 2 * 2_000 and call.attributes[Attr.TOKENS_ESTIMATED]
    assert res.output_tokens == 4_000 and res.input_tokens > 0     # it was (0, 0): spend not counted
