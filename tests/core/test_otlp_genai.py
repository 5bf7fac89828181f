"""OTLP the way consumers read it: GenAI message form, whole inputs, provider/model attributes, no
key twice on a span, session turns, and the protobuf encoding equal to the JSON one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from rlm_desktop.core.exporters import (
    genai_messages,
    genai_provider_name,
    otlp_protobuf_batches,
    otlp_request,
    to_otlp,
)
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace
from tests.core.test_exporters import make_trace


def _spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {kv["key"]: next(iter(kv["value"].values())) for kv in span["attributes"]}


def session_trace() -> Trace:
    """Two turns of a session (two root runs), the second continuing the first's conversation."""
    tr = Trace({"session": "budget-review", "provider": "OpenAI"})
    t = 1_700_000_000.0
    last_call = None
    for turn in (1, 2):
        run = tr.start_span(SpanKind.RUN, f"turn {turn}", None, {
            Attr.QUERY: f"question {turn}", Attr.TURN: turn, Attr.PROVIDER: "OpenAI",
            Attr.MODELS: {"root": "gpt-4o", "sub": "gpt-4o-mini"}, Attr.COST_USD: 0.5,
            Attr.INPUT_TOKENS: 1}, now=t)
        it = tr.start_span(SpanKind.ITERATION, "iteration 1", run, now=t + 0.1)
        msgs = ([{"role": "system", "content": "You are an RLM."}] if last_call is None else []) + \
            [{"role": "user", "content": f"question {turn}"}]
        attrs: dict[str, Any] = {Attr.MODEL: "gpt-4o", Attr.PROVIDER: "OpenAI", Attr.MESSAGES: msgs,
                                 Attr.MESSAGE_COUNT: 2 if turn == 1 else 4}
        if last_call is not None:
            attrs[Attr.HISTORY_FROM] = last_call
            msgs.insert(0, {"role": "assistant", "content": "answer 1"})
        call = tr.start_span(SpanKind.LLM_CALL, "chat gpt-4o", it, attrs, now=t + 0.2)
        tr.end_span(call, SpanStatus.OK, {Attr.RESPONSE: f"FINAL(answer {turn})", Attr.INPUT_TOKENS: 10,
                                          Attr.OUTPUT_TOKENS: 3, Attr.COST_USD: 0.001,
                                          Attr.FINISH_REASON: "stop", Attr.RESPONSE_MODEL: "gpt-4o-2024-08-06"},
                    now=t + 0.5)
        last_call = call
        tr.end_span(it, SpanStatus.OK, now=t + 0.6)
        tr.end_span(run, SpanStatus.OK, {Attr.COST_USD: 0.001}, now=t + 0.7)
        t += 10
    return tr


@pytest.fixture()
def trace(tmp_path: Path) -> Trace:
    return make_trace(tmp_path / "t.jsonl")


def test_no_span_carries_an_attribute_key_twice(trace: Trace) -> None:
    for tr in (trace, session_trace()):
        spans = _spans(json.loads(to_otlp(tr)))
        assert spans
        for s in spans:
            dup = [k for k, n in Counter(kv["key"] for kv in s["attributes"]).items() if n > 1]
            assert dup == [], f"{s['name']} repeats {dup}"
        for body, _ in otlp_protobuf_batches(tr):      # and the protobuf the endpoint gets
            for span in _spans(MessageToDict(ExportTraceServiceRequest.FromString(body))):
                keys = [kv["key"] for kv in span["attributes"]]
                assert len(keys) == len(set(keys))


def test_every_model_call_carries_its_whole_input_in_genai_form(trace: Trace) -> None:
    spans = _spans(json.loads(to_otlp(trace)))
    calls = [_attrs(s) for s in spans if s["name"] == "chat gpt-x"]
    second = next(a for a in calls if a.get("rlm.history_from"))
    msgs = json.loads(second["gen_ai.input.messages"])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]   # 4, not the 2 new ones
    assert msgs[0]["parts"] == [{"type": "text", "content": msgs[0]["parts"][0]["content"]}]
    assert msgs[0]["parts"][0]["content"].startswith("sys ")
    assert json.loads(second["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "FINAL(ACME)"}], "finish_reason": "stop"}]
    assert "rlm.messages" not in second


def test_provider_models_and_session_turns(trace: Trace) -> None:
    tr = session_trace()
    spans = _spans(otlp_request(tr))
    runs = [s for s in spans if s["name"] == "invoke_agent rlm"]
    assert len(runs) == 2 and runs[0]["traceId"] != runs[1]["traceId"]      # a turn = an OTLP trace
    assert {_attrs(r)["gen_ai.conversation.id"] for r in runs} == {"budget-review"}
    for r in runs:
        a = _attrs(r)
        assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.request.model"] == "gpt-4o"
        assert a["gen_ai.usage.cost"] == pytest.approx(0.001)   # from the totals of its own subtree
        assert r["traceId"] == next(s["traceId"] for s in spans if _attrs(s)["rlm.span.id"] == a["rlm.span.id"])
    calls = [_attrs(s) for s in spans if s["name"] == "chat gpt-4o"]
    assert [c["gen_ai.response.model"] for c in calls] == ["gpt-4o-2024-08-06"] * 2
    assert all(c["gen_ai.provider.name"] == "openai" and c["gen_ai.operation.name"] == "chat" for c in calls)
    second = json.loads(calls[1]["gen_ai.input.messages"])
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    # a trace without a served model says nothing rather than guess
    assert all("gen_ai.response.model" not in _attrs(s) for s in _spans(otlp_request(trace)))


def test_provider_names_follow_the_well_known_values() -> None:
    assert genai_provider_name("OpenAI") == "openai"
    assert genai_provider_name("Azure OpenAI (work)") == "azure.ai.openai"
    assert genai_provider_name("Mistral") == "mistral_ai"
    assert genai_provider_name("My vLLM box") == "my_vllm_box"
    assert genai_provider_name(None) == "unknown"
    assert genai_provider_name("whatever", demo=True) == "rlm_desktop.demo"
    assert genai_messages([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}]


def test_protobuf_is_the_json_structure_in_batches(trace: Trace) -> None:
    want = _spans(otlp_request(trace))
    bodies = list(otlp_protobuf_batches(trace, max_bytes=2_000))     # forces several requests
    assert len(bodies) > 1 and sum(n for _, n in bodies) == len(want)
    got = []
    for body, n in bodies:
        req = ExportTraceServiceRequest.FromString(body)
        [rs] = req.resource_spans
        assert {kv.key for kv in rs.resource.attributes} >= {"service.name", "service.version"}
        assert len(rs.scope_spans[0].spans) == n
        got += rs.scope_spans[0].spans
    for pb, js in zip(got, want, strict=True):
        assert pb.trace_id.hex() == js["traceId"] and pb.span_id.hex() == js["spanId"]
        assert pb.parent_span_id.hex() == js.get("parentSpanId", "")
        assert pb.name == js["name"] and pb.kind == js["kind"]
        assert pb.start_time_unix_nano == int(js["startTimeUnixNano"])
        as_dict = MessageToDict(pb, use_integers_for_enums=True)   # protobuf's own JSON mapping makes of it
        assert as_dict["attributes"] == js["attributes"] and as_dict["status"] == js["status"]
        assert as_dict["endTimeUnixNano"] == js["endTimeUnixNano"]
