"""The offline demo provider (no model, no network): deterministic, labelled as a demo everywhere."""

# As a root model it writes real REPL code in three steps (peek at the context; grep for the
# question's words and ask the sub-model about each matching chunk with llm_query_batched; combine
# and FINAL_VAR). As a sub model it answers extractively: the excerpt's sentences sharing the most
# words with the question. It goes through the same loop, sandbox and trace as a real provider; its
# token counts are estimates (characters / 4) and it costs nothing.

from __future__ import annotations

import asyncio
import re
from typing import Any

from rlm_desktop.core.config import ProviderConfig

DEMO_ROOT_MODEL = "demo-root"
DEMO_SUB_MODEL = "demo-sub"

DEMO_PROVIDER = ProviderConfig(
    id="demo",
    name="Offline demo (no model)",
    base_url="offline:demo",
    api_key=None,
    needs_key=False,
    root_model=DEMO_ROOT_MODEL,
    sub_model=DEMO_SUB_MODEL,
    concurrency=4,
    request_timeout_s=30.0,
    max_retries=0,
    is_demo=True,
)

DEMO_LABEL = "Offline demo (no model): answers are extracted text, not a model's reasoning."

_STOPWORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers him his how i if in into is it its itself just me more most my no nor not
now of off on once only or other our out over own same she should so some such than that the their
them then there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours please tell me list give find show describe
explain summarize summarise documents document files file text mention mentions mentioned say says
""".split())

_CHUNK = 1500
_MAX_CHUNKS = 6
_STREAM_PIECE = 48
_STREAM_PAUSE_S = 0.003


def query_words(query: str) -> list[str]:
    """The question's content words, in order, lower-case, without duplicates (at most 8)."""
    words: list[str] = []
    for w in re.findall(r"[\w][\w'-]*", query.lower()):
        w = w.strip("'-")
        if len(w) < 3 and not w.isdigit():
            continue
        if w in _STOPWORDS or w in words:
            continue
        words.append(w)
    if not words:
        words = [w for w in re.findall(r"\w+", query.lower()) if len(w) > 1][:3]
    return words[:8]


# The current turn's question: "Question: …", or a session follow-up's "Question (turn 2, …): …"
# (an earlier turn's block, "[earlier turn 1] Question: …", is not the current question).
_QUESTION = re.compile(r"Question(?: \(turn \d+[^)]*\))?: ")


def _current_turn(messages: list[dict[str, Any]]) -> tuple[str, int]:
    """The current turn's question and how many root replies it has had so far."""
    at, question = -1, ""
    for i, m in enumerate(messages):
        text = str(m.get("content") or "") if m.get("role") == "user" else ""
        found = _QUESTION.match(text)
        if found:
            at, question = i, text[found.end():].split("\n\n", 1)[0].strip()
    return question, sum(1 for m in messages[at + 1:] if m.get("role") == "assistant")


def root_reply(messages: list[dict[str, Any]]) -> str:
    """The demo root model's next reply for a conversation (depends only on the conversation)."""
    question, step = _current_turn(messages)
    words = query_words(question)
    if step == 0:
        return (
            "Offline demo step 1 of 3: peek at the documents before searching them.\n\n"
            "```repl\n"
            "# Peek at the context: how many documents, how big, how each one starts\n"
            "if isinstance(context, dict):\n"
            "    print(f\"{len(context)} documents, {sum(len(t) for t in context.values()):,} characters\")\n"
            "    for name, text in list(context.items())[:10]:\n"
            "        print(f\"- {name}: {len(text):,} chars, starts {text[:70]!r}\")\n"
            "else:\n"
            "    print(f\"one document, {len(context):,} characters, starts {context[:200]!r}\")\n"
            "```\n")
    if step == 1:
        return (
            f"Offline demo step 2 of 3: search for the question's words {words!r} and ask the "
            "sub-model about each matching chunk, concurrently.\n\n"
            "```repl\n"
            "# Find the chunks that mention the question's words; ask the sub-model about each\n"
            "import re\n"
            f"QUESTION = {question!r}\n"
            f"words = {words!r}\n"
            "pattern = re.compile('|'.join(re.escape(w) for w in words), re.IGNORECASE)\n"
            "docs = context if isinstance(context, dict) else {'document': context}\n"
            "chunks = []\n"
            "for name, text in docs.items():\n"
            f"    for start in range(0, len(text), {_CHUNK}):\n"
            f"        piece = text[start:start + {_CHUNK}]\n"
            "        hits = len(pattern.findall(piece))\n"
            "        if hits:\n"
            "            chunks.append((hits, name, piece))\n"
            "chunks.sort(key=lambda c: -c[0])\n"
            f"chunks = chunks[:{_MAX_CHUNKS}]\n"
            "print(f'{len(chunks)} chunk(s) mention {words}')\n"
            "prompts = [f'Question: {QUESTION}\\nExcerpt from {name}:\\n{piece}' for _, name, piece in chunks]\n"
            "answers = llm_query_batched(prompts) if prompts else []\n"
            "findings = [(name, a) for (_, name, _), a in zip(chunks, answers)\n"
            "            if a and not a.startswith(('(no relevant', 'Error:'))]\n"
            "for name, a in findings:\n"
            "    print(f'{name}: {a[:200]}')\n"
            "```\n")
    return (
        "Offline demo step 3 of 3: combine the sub-model's extracts into the answer.\n\n"
        "```repl\n"
        "# Gather what the sub-model found into the final answer\n"
        "try:\n"
        "    found = findings\n"
        "except NameError:\n"
        "    found = []\n"
        f"words = {words!r}\n"
        "if found:\n"
        "    answer = ('Offline demo (no model) - passages that mention ' + ', '.join(words) + ':\\n'\n"
        "              + '\\n'.join(f'- {name}: {text}' for name, text in found))\n"
        "else:\n"
        "    answer = ('Offline demo (no model): no passage in the documents mentions '\n"
        "              + ', '.join(words) + '.')\n"
        "FINAL_VAR('answer')\n"
        "```\n")


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def sub_reply(prompt: str) -> str:
    """Extractive answer: up to two sentences of the excerpt sharing the most words with the question."""
    question, _, excerpt = prompt.partition("\n")
    if question.startswith("Question: "):
        question = question[len("Question: "):]
    head, sep, body = excerpt.partition(":\n")
    if sep and head.startswith("Excerpt from "):
        excerpt = body
    words = query_words(question)
    scored: list[tuple[int, int, str]] = []
    for i, sentence in enumerate(s.strip() for s in _SENTENCE.split(excerpt)):
        if not sentence:
            continue
        low = sentence.lower()
        score = sum(1 for w in words if w in low)
        if score:
            scored.append((score, i, sentence))
    if not scored:
        return "(no relevant passage in this excerpt)"
    best = sorted(scored, key=lambda t: (-t[0], t[1]))[:2]
    best.sort(key=lambda t: t[1])
    return " ".join(s if len(s) <= 300 else s[:297] + "…" for _, _, s in best)


def _is_root(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and messages[0].get("role") == "system" and any(
        m.get("role") == "user" and _QUESTION.match(str(m.get("content") or "")) for m in messages)


async def chat(model: str, messages: list[dict[str, Any]], *, on_delta: Any = None) -> Any:
    """The demo's answer as a ChatResult (streamed in small pieces like a real model)."""
    from rlm_desktop.engine.providers import ChatResult, estimate_tokens

    if _is_root(messages):
        text = root_reply(messages)
    else:
        last = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        text = sub_reply(last)
    for i in range(0, len(text), _STREAM_PIECE):
        if on_delta is not None:
            on_delta(text[i:i + _STREAM_PIECE])
        await asyncio.sleep(_STREAM_PAUSE_S)
    in_chars = sum(len(str(m.get("content") or "")) for m in messages)
    return ChatResult(text=text, model=model or DEMO_ROOT_MODEL, input_tokens=max(1, in_chars // 4),
                      output_tokens=estimate_tokens(text), cached_tokens=0, cost_usd=0.0,
                      cost_known=True, finish_reason="stop", attempts=1, tokens_estimated=True)
