"""What the root model is told: the system prompt (context + REPL), and the engine's user messages."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_desktop.core.documents import kind_for
from rlm_desktop.core.formats import FAMILIES, GUIDANCE, KIND_GUIDANCE, kind_family

# How many documents the system prompt lists by name; the rest are summarised in one line.
MAX_LISTED_DOCUMENTS = 40


@dataclass(frozen=True, slots=True)
class ContextInfo:
    """A description of the ``context`` value (never its content)."""

    type: str                         # "str" | "dict[str, str]"
    count: int
    total_chars: int
    sizes: list[tuple[str, int]]      # (name, characters), in the order of the mapping
    kinds: tuple[tuple[str, int], ...] = ()   # (document kind, how many), sorted by kind

    @property
    def est_tokens(self) -> int:
        return self.total_chars // 4

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "count": self.count, "total_chars": self.total_chars,
                "documents": [{"name": n, "chars": c} for n, c in self.sizes[:MAX_LISTED_DOCUMENTS]]}


def describe_context(context: str | dict[str, str], kinds: Mapping[str, str] | None = None) -> ContextInfo:
    """Describe ``context``. ``kinds`` maps document names to the kinds the loader detected; without it
    a dict's kinds come from its keys' file names (as the loader names them), a str has none."""
    if kinds is None:
        kinds = {str(k): kind_for(Path(str(k))) for k in context} if isinstance(context, dict) else {}
    counted = tuple(sorted(Counter(kinds.values()).items()))
    if isinstance(context, str):
        return ContextInfo("str", 1, len(context), [("context", len(context))], counted)
    sizes = [(str(k), len(v) if isinstance(v, str) else len(str(v))) for k, v in context.items()]
    return ContextInfo("dict[str, str]", len(sizes), sum(c for _, c in sizes), sizes, counted)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def context_description(info: ContextInfo) -> str:
    """The context paragraph of the system prompt (type, count, total and per-document sizes)."""
    if info.type == "str":
        return (f"`context` is a str: one document of {_fmt_int(info.total_chars)} characters "
                f"(about {_fmt_int(info.est_tokens)} tokens).")
    lines = [f"`context` is a dict[str, str] mapping {_fmt_int(info.count)} document paths (relative, "
             f"in sorted order) to their text: {_fmt_int(info.total_chars)} characters in total "
             f"(about {_fmt_int(info.est_tokens)} tokens)."]
    if info.count:
        lines.append("Documents (characters):")
        for name, chars in info.sizes[:MAX_LISTED_DOCUMENTS]:
            lines.append(f"- {name}: {_fmt_int(chars)}")
        rest = info.sizes[MAX_LISTED_DOCUMENTS:]
        if rest:
            sizes = [c for _, c in rest]
            lines.append(f"- … and {_fmt_int(len(rest))} more documents "
                         f"({_fmt_int(min(sizes))} to {_fmt_int(max(sizes))} characters each, "
                         f"{_fmt_int(sum(sizes))} in total); list them with `list(context)`.")
    return "\n".join(lines)


def kinds_description(info: ContextInfo) -> str:
    """What kinds of documents ``context`` holds, one line of exploring advice per kind (or "")."""
    by_family: dict[str, list[tuple[str, int]]] = {}
    for kind, n in info.kinds:
        family = kind_family(kind)
        if family is not None:
            by_family.setdefault(family, []).append((kind, n))
    if not by_family:
        return ""
    lines = ["The documents by kind (from their file types), and how to explore each:"]
    for family in FAMILIES:   # a fixed order: the same documents give the same prompt
        if family in by_family:
            counts = by_family[family]
            total = sum(n for _, n in counts)
            detail = ", ".join(f"{kind} {_fmt_int(n)}" for kind, n in counts)
            extra = dict.fromkeys(KIND_GUIDANCE[k] for k, _ in counts if k in KIND_GUIDANCE)
            advice = " ".join([GUIDANCE[family], *extra])
            lines.append(f"- {family} ({_fmt_int(total)}: {detail}) — {advice}")
    return "\n".join(lines)


def system_prompt(info: ContextInfo, *, sub_model: str, depth: int, max_depth: int,
                  max_iterations: int, max_output_chars: int, cell_timeout_s: float,
                  max_sub_calls: int, note: str | None = None) -> str:
    """The root model's system prompt for a run at ``depth`` (with the user's note, when given, as
    the last paragraph)."""
    rlm_line = (
        "- `rlm_query(prompt, context=None) -> str` — a nested recursive run: a fresh REPL whose "
        "`context` is the value you pass (default: this `context`), driven by a model like you. Use it "
        "for sub-tasks that themselves need code over a large text. Costs more than llm_query."
        if depth < max_depth else
        f"- `rlm_query` is not available here (maximum recursion depth {max_depth} reached); use "
        "llm_query.")
    where = "" if depth == 0 else f" You are a nested run at depth {depth}."
    kinds = kinds_description(info)
    kinds_part = f"\n\n{kinds}" if kinds else ""
    note_part = f"\n\n{note_paragraph(note)}" if note else ""
    return f"""You answer a question about documents that you cannot see directly.{where}
The documents are loaded in a persistent Python REPL as the variable `context`; look at them by
writing code. Sub-models can read pieces of text for you.

{context_description(info)}{kinds_part}

The REPL gives you:
- `context` — the documents, as described above.
- `llm_query(prompt, model=None) -> str` — ask a sub-model (default "{sub_model}") about a piece of
  text you include in the prompt. It sees only that prompt; it can read a few hundred thousand
  characters at most, so chunk large texts.
- `llm_query_batched(prompts, model=None) -> list[str]` — several llm_query calls run
  concurrently, answers in the same order; a failed item comes back as a string starting with
  "Error:". Prefer it to a loop of llm_query.
{rlm_line}
- `await llm_query_async(...)`, `await llm_query_batched_async(...)` (and `rlm_query_async`):
  async variants; top-level `await` works in cells.
- `FINAL(value)` — end the run with `value` as the answer. `FINAL_VAR(name)` — end it with the
  value of the variable called `name`. `SHOW_VARS()` lists your variables.
- `print(...)` shows you results. Each cell's output is cut to {_fmt_int(max_output_chars)} characters
  (the cut is stated), so print summaries and slices, not whole documents.

How to work:
1. Write Python in ```repl fenced blocks. Each block runs in the REPL; you then see its output.
   Variables persist between blocks (unless the REPL is restarted, which you will be told).
2. Start by peeking at `context` (sizes, first lines), then search it (str methods, `re`), chunk it and
   send chunks to sub-models, and combine their answers in variables.
3. When you know the answer, call `FINAL(answer)` or `FINAL_VAR("variable")` in a block, or write
   FINAL(your answer) on its own line outside code. Do not write a final answer in the same reply as
   code whose output you have not seen yet.

Limits: at most {max_iterations} replies from you, {cell_timeout_s:g} s of computing per cell (time
spent waiting for sub-calls does not count), {_fmt_int(max_sub_calls)} sub-calls in total. Be economical: every sub-call costs money.{CITATION_PARAGRAPH if depth == 0 else ''}{note_part}"""


# Asked of the root model only (its answer is the one checked); the same words every run.
CITATION_PARAGRAPH = """

Cite your sources: after each claim, name the passage it rests on as [path:L12-L18] (one line:
[path:L5]; a PDF page: [file.pdf p.3]), where path is the document's key in `context` (`context`
itself when it is one str) and line n is `text.split("\\n")[n - 1]` (1-based). In a spreadsheet cite
the sheet and its row numbers (each row line's first field) as [book.xlsx:Sales!R12-R18] (one row:
[book.xlsx:Sales!R3]; a sheet name with spaces in quotes: [book.xlsx:'Q1 plan'!R3]). Cite only lines
you or a sub-model actually read; each citation is checked against what the models of this run saw."""


# -- the user's note and a custom system prompt -------------------------------------------------
MAX_NOTE_CHARS = 1_000
NOTE_HEADING = "Note from the user about these documents:"


class PromptError(ValueError):
    """A note or a custom system prompt that cannot be used; the message says what to change."""


def clean_note(note: str | None) -> str | None:
    """The session note as it goes into the system prompt (stripped; None when empty). Raises
    PromptError for one longer than MAX_NOTE_CHARS: it is sent with every request."""
    if note is None or not note.strip():
        return None
    text = note.strip()
    if len(text) > MAX_NOTE_CHARS:
        raise PromptError(f"the note is {len(text):,} characters; keep it to {MAX_NOTE_CHARS:,} or "
                          "fewer (it is sent with every request): say what the documents are and "
                          "where things are, and put longer material in a document")
    return text


def note_paragraph(note: str) -> str:
    """The note's clearly delimited paragraph (the same note gives the same bytes)."""
    return f"{NOTE_HEADING}\n<<<\n{note}\n>>>"


# What a system prompt must tell the root model for this REPL to work: (what is checked, words
# that satisfy it). ``FINAL`` also matches ``FINAL_VAR``.
CONTRACT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("`context` (the documents variable)", ("context",)),
    ("`llm_query` (sub-model calls)", ("llm_query",)),
    ("```repl code fences (or ```python)", ("```repl", "```python")),
    ("FINAL / FINAL_VAR (how to answer)", ("FINAL",)),
)
CONTEXT_PLACEHOLDER = "{context_description}"
NOTE_PLACEHOLDER = "{note}"


def missing_contract(prompt: str) -> list[str]:
    """What of the REPL contract a custom system prompt does not mention ([] when it is complete).
    The context description the app adds does not count: it names `context` but not how to work."""
    return [what for what, words in CONTRACT if not any(w in prompt for w in words)]


def custom_system_prompt(template: str, info: ContextInfo, note: str | None = None) -> str:
    """A user's system prompt with what the app knows filled in: ``{context_description}`` is
    replaced by the documents' description (type, sizes, kinds) and ``{note}`` by the note's
    paragraph; whichever the template does not place is appended, in that order, after a blank line.
    Plain replacement (not str.format): braces in the user's text stay as written."""
    kinds = kinds_description(info)
    described = context_description(info) + (f"\n\n{kinds}" if kinds else "")
    noted = note_paragraph(note) if note else ""
    text = template.rstrip()
    tail: list[str] = []
    if CONTEXT_PLACEHOLDER in text:
        text = text.replace(CONTEXT_PLACEHOLDER, described)
    else:
        tail.append(described)
    if NOTE_PLACEHOLDER in text:
        text = text.replace(NOTE_PLACEHOLDER, noted)
    elif noted:
        tail.append(noted)
    return "\n\n".join([text, *tail])


def first_user_message(query: str) -> str:
    return (f"Question: {query}\n\nYou have not looked at `context` yet. Start by writing code to "
            "inspect it; do not answer before you have looked.")


def continue_message(query: str, iteration: int, max_iterations: int) -> str:
    left = max_iterations - iteration
    return (f"Continue working on the question: {query}\n"
            f"({left} repl{'y' if left == 1 else 'ies'} left. Answer with FINAL(...) or "
            "FINAL_VAR(...) once you are sure.)")


CORRECTIVE_MESSAGE = (
    "Your reply had neither a ```repl code block nor a final answer, so nothing happened. Either write "
    "code in a ```repl block to keep working on `context`, or give the answer with FINAL(answer) on its "
    "own line (or FINAL_VAR(\"name\") for a variable's value).")


def corrective_message(unknown_calls: tuple[str, ...] = ()) -> str:
    """The corrective message; when the reply asked for tools that do not exist here, it says so."""
    if not unknown_calls:
        return CORRECTIVE_MESSAGE
    names = ", ".join(f"`{n}`" for n in dict.fromkeys(unknown_calls))
    return (f"Your reply called a tool ({names}) that does not exist here; the only tool is the Python "
            "REPL. " + CORRECTIVE_MESSAGE)


CUT_REPLY_MESSAGE = (
    "Your reply was cut off at the output-token limit in the middle of a ```repl block, so that block "
    "did not run. Write shorter code (one step at a time) and close the block with ```.")


FILTERED_REPLY_MESSAGE = (
    "Your reply was stopped by the provider's content filter in the middle of a ```repl block, so "
    "that block did not run. Rephrase the step (the documents may contain text the filter flags; "
    "avoid quoting it back) and close the block with ```.")


def cut_reply_message(finish_reason: str | None) -> str | None:
    """What to tell the root model when its reply ended inside an unclosed code block for
    ``finish_reason`` — the output-token limit or the provider's content filter (None: a normal end,
    where an unclosed last block is the model's own style and runs)."""
    if finish_reason == "length":
        return CUT_REPLY_MESSAGE
    if finish_reason == "content_filter":
        return FILTERED_REPLY_MESSAGE
    return None


def final_rejected_message(reason: str) -> str:
    return (f"Your FINAL was not accepted: {reason}. Look at the output above, fix the problem, and "
            "give the final answer again once your code has run without error.")


def format_cell_output(index: int, total: int, *, status: str, stdout: str, stderr: str,
                       error: str | None, duration_s: float, max_chars: int,
                       restarted: bool, restart_reason: str | None,
                       sandbox_output_truncated: bool = False) -> tuple[str, bool]:
    """A cell's result as the root model sees it. Returns (text, truncated_by_us)."""
    parts: list[str] = []
    if stdout:
        parts.append(stdout.rstrip("\n"))
    if stderr:
        parts.append("[stderr]\n" + stderr.rstrip("\n"))
    if error and error.strip() not in stderr and not restarted:   # a restart is stated below
        parts.append("[error]\n" + error.rstrip("\n"))
    body = "\n".join(parts) if parts else "(no output)"
    truncated = False
    if len(body) > max_chars:
        head = max(0, max_chars * 4 // 5)
        tail = max(0, max_chars - head)
        omitted = len(body) - head - tail
        body = (body[:head] + f"\n[… output truncated: {omitted:,} of {len(body):,} characters "
                f"omitted; showing the first {head:,} and the last {tail:,}. Print less, or "
                "slices …]\n" + (body[-tail:] if tail else ""))
        truncated = True
    if sandbox_output_truncated:
        body += "\n[the REPL kept only the first part of this cell's output: it exceeded the output cap]"
    label = {"ok": "ok", "error": "error", "timeout": "timed out", "crashed": "crashed",
             "cancelled": "cancelled"}.get(status, status)
    header = f"[cell {index} of {total}: {label}, {duration_s:.2f} s]" if total > 1 else \
        f"[cell: {label}, {duration_s:.2f} s]"
    text = f"{header}\n{body}"
    if restarted:
        text += (f"\n[sandbox restarted: {restart_reason or 'the REPL process ended'}; variables lost. "
                 "`context` is loaded again; recompute what you need.]")
    return text, truncated


def cells_skipped_message(skipped: int) -> str:
    return (f"[{skipped} more code block{'s' if skipped != 1 else ''} in your reply did not run because "
            "an earlier block failed.]")


# -- sessions: follow-up turns ------------------------------------------------------------------
# How much of an earlier turn's answer the follow-up conversation repeats (the rest is stated).
EARLIER_ANSWER_CHARS = 2_000


def earlier_turn_messages(turns: list[tuple[str, str | None, str, str]]) -> list[dict[str, str]]:
    """The compact earlier-turn block of a follow-up: one (user, assistant) pair per earlier turn,
    from ``(question, answer or None, status word, variables left)``. Each pair depends only on its
    own turn, so the block of turn k is a byte-identical prefix of the block of turn k+1 (provider
    prefix caches keep hitting)."""
    out: list[dict[str, str]] = []
    for n, (question, answer, status, variables) in enumerate(turns, 1):
        out.append({"role": "user", "content": f"[earlier turn {n}] Question: {question}"})
        if answer is None:
            said = f"(no answer: the turn ended {status})"
        elif len(answer) > EARLIER_ANSWER_CHARS:
            said = (answer[:EARLIER_ANSWER_CHARS] + f"\n[… answer shortened: {len(answer):,} characters "
                    "in all]")
        else:
            said = answer
        tail = f"\nVariables in the REPL after turn {n}: {variables}" if variables else ""
        out.append({"role": "assistant", "content": f"[earlier turn {n}] Answer: {said}{tail}"})
    return out


def follow_up_user_message(query: str, turn: int, notes: list[str]) -> str:
    """The question of a follow-up turn: the REPL kept its variables from the earlier turns."""
    extra = "".join(f"\n{n}" for n in notes)
    return (f"Question (turn {turn}, a follow-up in the same session): {query}\n\nThe REPL still holds "
            f"`context` and the variables made in earlier turns (listed above); reuse them instead of "
            f"recomputing.{extra} Write code to work on the question; do not answer before you have "
            "checked with code.")
