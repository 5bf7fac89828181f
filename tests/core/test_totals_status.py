"""One function for a trace's totals (whole trace, a turn, any subtree; by model and depth), and
one mapping from each status word to what a person reads."""

from __future__ import annotations

from rlm_desktop.cli.exit_codes import (
    EXIT_CANCELLED,
    EXIT_LIMIT,
    EXIT_OK,
    EXIT_PROVIDER,
    EXIT_USAGE,
    exit_code_for,
)
from rlm_desktop.core.status import span_status_text, stop_reason_text
from rlm_desktop.core.totals import totals
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace


def _call(tr: Trace, parent: str, model: str, depth: int, cost: float | None, tin: int, tout: int) -> None:
    sid = tr.start_span(SpanKind.LLM_CALL, f"chat {model}", parent, {Attr.MODEL: model, Attr.DEPTH: depth})
    tr.end_span(sid, SpanStatus.OK, {Attr.INPUT_TOKENS: tin, Attr.OUTPUT_TOKENS: tout, Attr.COST_USD: cost})


def _two_turns() -> tuple[Trace, str, str]:
    tr = Trace({})
    runs = []
    for n in (1, 2):
        run = tr.start_span(SpanKind.RUN, f"turn {n}", None, {Attr.TURN: n})
        it = tr.start_span(SpanKind.ITERATION, "iteration 1", run, {Attr.DEPTH: 0})
        _call(tr, it, "root-m", 0, 0.01 * n, 100 * n, 10)
        cell = tr.start_span(SpanKind.CODE_CELL, "cell", it, {})
        sub = tr.start_span(SpanKind.SUB_CALL, "llm_query", cell, {})
        _call(tr, sub, "sub-m", 1, None if n == 2 else 0.001, 50, 5)
        for s in (sub, cell, it, run):
            tr.end_span(s, SpanStatus.OK)
        runs.append(run)
    return tr, runs[0], runs[1]


def test_totals_of_a_trace_a_turn_and_several_turns_agree() -> None:
    tr, r1, r2 = _two_turns()
    whole = totals(tr)
    one, two = totals(tr.spans[r1]), totals(tr.spans[r2])
    both = totals([tr.spans[r1], tr.spans[r2]])
    assert (whole.input_tokens, whole.output_tokens) == (400, 30)
    assert one.input_tokens + two.input_tokens == whole.input_tokens == both.input_tokens
    assert one.iterations == two.iterations == 1 and whole.iterations == both.iterations == 2
    assert one.cost_known and not two.cost_known and not whole.cost_known   # sub-m unpriced in turn 2
    assert abs(whole.cost_usd - 0.031) < 1e-9
    assert whole.by_model["sub-m"].cost_unknown_calls == 1 and whole.by_model["root-m"].cost_known
    assert whole.by_depth[0].input_tokens == 300 and whole.by_depth[1].input_tokens == 100


def test_status_words_fit_a_column_and_reasons_read_as_sentences() -> None:
    for word in ("running", "ok", "error", "timeout", "cancelled", "budget", "incomplete"):
        assert len(span_status_text(word)) <= 10
    assert stop_reason_text("budget_usd") == "the USD budget was reached"
    assert stop_reason_text("something_new") == "something new"


def test_exit_codes_follow_the_contract() -> None:
    assert exit_code_for("ok", "final") == EXIT_OK
    assert exit_code_for("limit", "budget_usd") == EXIT_LIMIT
    assert exit_code_for("cancelled", "cancelled") == EXIT_CANCELLED
    assert exit_code_for("error", "provider_error") == EXIT_PROVIDER
    assert exit_code_for("error", "call_timeout") == EXIT_PROVIDER
    assert exit_code_for("error", "sandbox_refused") == EXIT_USAGE


def test_subtree_usage_of_every_span_in_one_pass_equals_totals_of_that_span() -> None:
    from rlm_desktop.core.totals import subtree_usage

    tr, _, _ = _two_turns()
    usage = subtree_usage(tr)
    for span in tr:
        t = totals(span)
        u = usage[span.id]
        assert (u.calls, u.input_tokens, u.output_tokens, u.cost_unknown_calls) == \
            (t.llm_calls, t.input_tokens, t.output_tokens, t.cost_unknown_calls), span.name
        assert abs(u.cost_usd - t.cost_usd) < 1e-12
