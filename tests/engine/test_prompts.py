"""The system prompt describes the context; cell output is cut with the cut stated; history shrinks."""

from __future__ import annotations

import copy

from rlm_desktop.engine import prompts
from rlm_desktop.engine.run import _History


def test_context_description_lists_sizes_and_caps_long_lists() -> None:
    ctx = {f"doc{i:04d}.txt": "x" * (i + 1) for i in range(3000)}
    info = prompts.describe_context(ctx)
    sp = prompts.system_prompt(info, sub_model="sub-m", depth=0, max_depth=1, max_iterations=7,
                               max_output_chars=1234, cell_timeout_s=9, max_sub_calls=11)
    assert "dict[str, str]" in sp and "3,000 document" in sp
    assert f"{info.total_chars:,} characters" in sp
    assert "- doc0000.txt: 1" in sp and "- doc0039.txt: 40" in sp
    assert "doc0040.txt" not in sp and "2,960 more documents" in sp
    assert "llm_query_batched" in sp and "rlm_query(prompt" in sp and "FINAL_VAR" in sp
    assert len(sp) < 8000
    one = prompts.system_prompt(prompts.describe_context("abc"), sub_model="s", depth=1, max_depth=1,
                                max_iterations=3, max_output_chars=10, cell_timeout_s=1, max_sub_calls=1)
    assert "one document of 3 characters" in one and "rlm_query` is not available" in one


def test_cell_output_truncation_is_stated() -> None:
    text, cut = prompts.format_cell_output(1, 1, status="ok", stdout="a" * 5000 + "END", stderr="",
                                           error=None, duration_s=0.1, max_chars=1000,
                                           restarted=False, restart_reason=None)
    assert cut and "output truncated" in text and text.rstrip().endswith("END") and len(text) < 1300
    text, cut = prompts.format_cell_output(1, 1, status="timeout", stdout="", stderr="", error="x",
                                           duration_s=10, max_chars=1000, restarted=True,
                                           restart_reason="timeout after 10 s")
    assert not cut and "sandbox restarted: timeout after 10 s; variables lost" in text


def test_history_keeps_system_and_question_and_shrinks_old_outputs_first() -> None:
    msgs = [{"role": "system", "content": "S" * 100}, {"role": "user", "content": "Question: q"}]
    h = _History(9000)
    for i in range(6):
        msgs.append({"role": "assistant", "content": f"```repl\nprint({i})\n```"})
        msgs.append({"role": "user", "content": f"[cell: ok, 0.01 s]\n{i}" + "o" * 3000})
        h.output_indexes.append(len(msgs) - 1)
    note = h.enforce(msgs)
    assert note is not None and "shortened" in note
    assert msgs[0]["content"] == "S" * 100 and msgs[1]["content"] == "Question: q"
    assert "older output shortened" in msgs[3]["content"]
    assert msgs[-1]["content"].endswith("o" * 3000)           # the newest output is intact
    assert _History.size(msgs) <= 9000
    # Not just under the limit: toward the low-water mark, so every old output was shortened,
    # which leaves room for the next turns.
    assert sum("older output shortened" in m["content"] for m in msgs) == 5
    # The next turns fit without touching what was sent before: the prefix stays the same (the
    # provider's prompt cache keeps hitting) and nothing needs re-sending in full.
    later, h_later = copy.deepcopy(msgs), copy.deepcopy(h)
    for _ in range(2):
        later.append({"role": "assistant", "content": "```repl\nprint(1)\n```"})
        later.append({"role": "user", "content": "[cell: ok, 0.01 s]\n" + "n" * 600})
        h_later.output_indexes.append(len(later) - 1)
        assert h_later.enforce(later) is None
    assert later[:len(msgs)] == msgs
    # Far too big even after shortening: the oldest exchanges go, and the conversation says so.
    h2 = _History(2000)
    h2.output_indexes = list(range(3, len(msgs), 2))
    note2 = h2.enforce(msgs)
    assert note2 is not None and "removed" in note2
    assert msgs[1]["content"] == "Question: q" and "removed to keep the conversation" in msgs[3]["content"]
    assert [m["role"] for m in msgs[1:]] == ["user"] + ["assistant", "user"] * ((len(msgs) - 2) // 2)
    assert msgs[-1]["content"].endswith("o" * 3000)
    # A later drop updates the same note (one note, cumulative count).
    msgs.append({"role": "assistant", "content": "more"})
    msgs.append({"role": "user", "content": "[cell: ok, 0.01 s]\n" + "p" * 3000})
    h2.enforce(msgs)
    notes = [m for m in msgs if "removed to keep the conversation" in str(m["content"])]
    assert len(notes) == 1 and notes[0]["content"].startswith(f"[{h2.dropped_total} earlier")
    assert h2.dropped_total > 1 and msgs[-1]["content"].endswith("p" * 3000)
