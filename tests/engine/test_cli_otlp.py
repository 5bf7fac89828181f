"""`rlm-desktop export TRACE --endpoint URL`: a real run's trace sent over OTLP/HTTP (protobuf) to a
local receiver that decodes it with the official opentelemetry-proto classes, as Phoenix, Langfuse,
Jaeger or the Collector would; secrets in headers never reach stderr, the log or the trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rlm_desktop.core.trace import Attr, SpanKind, read_trace
from tests.engine.conftest import TEST_KEY, route
from tests.fakeserver import FakeOpenAI, Reply
from tests.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
HEADER_SECRET = "lf-sk-HEADER-never-shown-93c1"
URL_PASSWORD = "url-pass-never-shown-55e2"
CLIENT, INTERNAL = 3, 1      # opentelemetry.proto.trace.v1.Span.SpanKind


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.pop("OPENAI_API_KEY", None)
    e.pop("OTEL_EXPORTER_OTLP_HEADERS", None)
    e["PYTHONPATH"] = str(ROOT)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "rlm_desktop", *args], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=90)


@pytest.fixture
def run_trace(srv: FakeOpenAI, tmp_path: Path) -> Path:
    """A real three-iteration run with batched sub-calls; the server names a dated root model."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "report.txt").write_text("Quarterly report. The launch date is March 3.\n")
    (docs / "notes.md").write_text("# Notes\nNothing about launches here.\n")
    srv.handler = route([
        Reply(text="Let me look.\n```repl\nprint(sorted(context))\n```", model="gpt-4o-2024-08-06"),
        Reply(text="```repl\nparts = llm_query_batched([f'{k}: ' + v for k, v in context.items()])\n"
                   "print(parts)\n```", model="gpt-4o-2024-08-06"),
        Reply(text="```repl\nanswer = [p for p in parts if 'March' in p][0]\n```\nFINAL_VAR(answer)",
              model="gpt-4o-2024-08-06"),
    ], sub=lambda r: Reply(text="March 3" if "March" in r.last_user else "nothing",
                           usage={"prompt_tokens": 50, "completion_tokens": 3, "cached_tokens": 0}))
    trace_file = tmp_path / "run.jsonl"
    r = _cli("run", "--docs", str(docs), "--query", "When is the launch?", "--base-url", srv.base_url,
             "--model", "gpt-4o", "--sub-model", "gpt-4o-mini", "--trace", str(trace_file),
             "--allow-weak-sandbox", "--quiet", env={"OPENAI_API_KEY": TEST_KEY})
    assert r.returncode == 0, r.stderr
    return trace_file


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def _all_user_files_text() -> str:
    home = Path(os.environ["RLM_DESKTOP_HOME"])
    return "\n".join(p.read_text(errors="replace") for p in home.rglob("*") if p.is_file())


def test_sent_trace_decodes_to_the_run_tree_with_tokens_models_messages_and_cost(run_trace: Path) -> None:
    trace = read_trace(run_trace)
    with OtlpReceiver() as rx:
        r = _cli("export", str(run_trace), "--format", "otlp", "--endpoint", rx.url,
                 "--header", f"Authorization=Bearer {HEADER_SECRET}", "--header", "x-team=analysts")
        assert r.returncode == 0, r.stderr
        assert f"sent {len(trace)} spans in 1 request to {rx.url}/v1/traces" in r.stderr
        [req] = rx.requests
        assert req.path == "/v1/traces" and req.headers["Content-Type"] == "application/x-protobuf"
        assert req.headers["Authorization"] == f"Bearer {HEADER_SECRET}" and req.headers["x-team"] == "analysts"
        spans = rx.spans
    # the tree: one span per trace span, every parent link resolves, one root
    assert len(spans) == len(trace)
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans) and all(len(s.span_id) == 8 and len(s.trace_id) == 16 for s in spans)
    roots = [s for s in spans if not s.parent_span_id]
    assert [s.name for s in roots] == ["invoke_agent rlm"]
    assert all(not s.parent_span_id or s.parent_span_id in by_id for s in spans)
    mine = {_attrs(s)["rlm.span.id"]: s for s in spans}
    for span in trace:                       # same parent as in the trace, span by span
        got = mine[span.id]
        if span.parent is None:
            assert not got.parent_span_id
        else:
            assert by_id[got.parent_span_id] is mine[span.parent.id]
    # kinds: model calls are CLIENT spans, the rest INTERNAL
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert len(calls) == 5 and all(s.kind == CLIENT for s in calls)
    assert all(s.kind == INTERNAL for s in spans if not s.name.startswith("chat "))
    # tokens, models, cost
    llm = {s.id: s for s in trace if s.kind == SpanKind.LLM_CALL}
    for s in calls:
        a = _attrs(s)
        src = llm[a["rlm.span.id"]].attributes
        assert a["gen_ai.usage.input_tokens"] == src[Attr.INPUT_TOKENS]
        assert a["gen_ai.usage.output_tokens"] == src[Attr.OUTPUT_TOKENS]
        assert a["gen_ai.usage.cost"] == pytest.approx(src[Attr.COST_USD]) and a["gen_ai.usage.cost"] > 0
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"]
    root_calls = [_attrs(s) for s in calls if _attrs(s)["gen_ai.request.model"] == "gpt-4o"]
    sub_calls = [_attrs(s) for s in calls if _attrs(s)["gen_ai.request.model"] == "gpt-4o-mini"]
    assert len(root_calls) == 3 and len(sub_calls) == 2
    assert all(a["gen_ai.response.model"] == "gpt-4o-2024-08-06" for a in root_calls)
    assert all(a["gen_ai.response.model"] == "gpt-4o-mini" for a in sub_calls)
    run = _attrs(roots[0])
    total_cost = sum(s.attributes[Attr.COST_USD] for s in llm.values())
    assert run["gen_ai.usage.cost"] == pytest.approx(total_cost)
    assert run["gen_ai.usage.input_tokens"] == sum(s.attributes[Attr.INPUT_TOKENS] for s in llm.values())
    # messages: every root call carries its WHOLE input, system prompt first, in GenAI parts form
    for i, a in enumerate(sorted(root_calls, key=lambda a: a["rlm.message_count"])):
        msgs = json.loads(a["gen_ai.input.messages"])
        assert len(msgs) == a["rlm.message_count"] == 2 + 2 * i
        assert msgs[0]["role"] == "system" and "REPL" in msgs[0]["parts"][0]["content"]
        assert all(set(m) == {"role", "parts"} and m["parts"][0]["type"] == "text" for m in msgs)
        [out] = json.loads(a["gen_ai.output.messages"])
        assert out["role"] == "assistant" and out["finish_reason"] == "stop"
    last = max(root_calls, key=lambda a: a["rlm.message_count"])
    assert "Let me look." in json.loads(last["gen_ai.input.messages"])[2]["parts"][0]["content"]
    # the secret went to the endpoint and nowhere else
    assert HEADER_SECRET not in r.stderr + r.stdout
    assert HEADER_SECRET not in _all_user_files_text()


def test_a_failing_endpoint_exits_5_with_its_message_and_never_the_secrets(run_trace: Path) -> None:
    with OtlpReceiver() as rx:
        # the endpoint echoes the credential in its error: the message must still not show it
        rx.fail = (503, f"collector queue full (auth Bearer {HEADER_SECRET})".encode(), "text/plain")
        url = f"http://ingest:{URL_PASSWORD}@127.0.0.1:{rx.port}/v1/traces"
        r = _cli("export", str(run_trace), "--endpoint", url,
                 env={"OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{HEADER_SECRET}"})
        assert r.returncode == 5, r.stderr
        assert "HTTP 503" in r.stderr and "collector queue full" in r.stderr
        assert rx.requests[0].headers["Authorization"] == f"Bearer {HEADER_SECRET}"   # env header sent
        rx.fail = (401, json.dumps({"message": "invalid credentials"}).encode(), "application/json")
        r401 = _cli("export", str(run_trace), "--endpoint", rx.url, "--header",
                    f"Authorization=Bearer {HEADER_SECRET}")
        assert r401.returncode == 5 and "HTTP 401: invalid credentials" in r401.stderr
    for out in (r.stderr, r.stdout, r401.stderr):
        assert HEADER_SECRET not in out and URL_PASSWORD not in out
    text = _all_user_files_text()
    assert HEADER_SECRET not in text and URL_PASSWORD not in text
    # the receiver is gone: connection refused is said plainly, exit 5
    r = _cli("export", str(run_trace), "--endpoint", rx.url, "--header", f"Authorization={HEADER_SECRET}")
    assert r.returncode == 5 and "cannot connect to" in r.stderr and HEADER_SECRET not in r.stderr


def test_bad_endpoint_flags_are_usage_errors_without_the_value(run_trace: Path) -> None:
    r = _cli("export", str(run_trace), "--endpoint", "localhost:4318")
    assert r.returncode == 2 and "http:// or https://" in r.stderr
    r = _cli("export", str(run_trace), "--endpoint", "http://127.0.0.1:9", "--header", HEADER_SECRET)
    assert r.returncode == 2 and "NAME=VALUE" in r.stderr and HEADER_SECRET not in r.stderr
    r = _cli("export", str(run_trace), "--endpoint", "http://127.0.0.1:9", "--format", "html")
    assert r.returncode == 2 and "--endpoint sends OTLP" in r.stderr


def test_partial_success_is_reported(run_trace: Path) -> None:
    with OtlpReceiver() as rx:
        rx.rejected_spans = 2
        r = _cli("export", str(run_trace), "--endpoint", rx.url + "/v1/traces")
    assert r.returncode == 5 and "it rejected 2: some spans were too old" in r.stderr


def test_a_busy_endpoint_is_tried_again_as_otlp_asks(run_trace: Path) -> None:
    with OtlpReceiver() as rx:
        rx.fail, rx.fail_times = (503, b"busy", "text/plain"), 2       # Retry-After: 0
        r = _cli("export", str(run_trace), "--endpoint", rx.url)
        assert r.returncode == 0, r.stderr
        assert len(rx.requests) == 3 and rx.requests[-1].request is not None
        rx.fail, rx.fail_times = (400, b"bad request: no retry for this", "text/plain"), None
        r = _cli("export", str(run_trace), "--endpoint", rx.url)
        assert r.returncode == 5 and "HTTP 400: bad request" in r.stderr and len(rx.requests) == 4
