"""Reading a root model's reply: ```repl / ```python code blocks, the textual FINAL(...) forms, and
the tool-call dialects some models write instead (``<function_calls>``/``<invoke>``, ``<tool_call>``)."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

_CODE_LANGS = {"repl", "python", "py", "python3"}
_OPEN = re.compile(r"^\s*```+\s*([A-Za-z0-9_+-]*)\s*(.*)$")
_FINAL_START = re.compile(r"^[ \t>*_#-]*(FINAL_VAR|FINAL)\s*\(", re.MULTILINE)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A closing fence may be followed by the closing tags of a tool call: ```</parameter></invoke>
_CLOSING_TAGS = re.compile(r"^(?:</[\w:-]+>\s*)*$")


@dataclass(frozen=True, slots=True)
class TextualFinal:
    """A ``FINAL(...)`` / ``FINAL_VAR(...)`` written outside code."""

    via: str            # "FINAL" | "FINAL_VAR"
    value: str          # FINAL: the answer text; FINAL_VAR: the variable name
    raw: str            # the argument as written


@dataclass(frozen=True, slots=True)
class ParsedReply:
    code_blocks: list[str] = field(default_factory=list)
    final: TextualFinal | None = None
    prose: str = ""     # the text outside every fenced block
    last_unclosed: bool = False   # the last code block had no closing fence (reply cut short?)
    dialects: tuple[str, ...] = ()        # tool-call forms understood in this reply ("invoke", "tool_call")
    unknown_calls: tuple[str, ...] = ()   # tool calls that were not code or a final answer (their names)

    @property
    def has_code(self) -> bool:
        return bool(self.code_blocks)


def parse_reply(text: str) -> ParsedReply:
    """Split a reply into runnable code blocks and the prose around them, and find a textual final.

    Only ```repl / ```python (```py) fences are code; other fences are neither code nor final text.
    A closing fence at the end of the last code line is tolerated, and so is a final block the model
    left unclosed. The textual final is looked for in the prose only, at the start of a line.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    blocks: list[str] = []
    prose: list[str] = []
    unclosed = False
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        m = _OPEN.match(line)
        if not m:
            prose.append(line)
            i += 1
            continue
        lang = m.group(1).lower()
        rest = m.group(2)
        is_code = lang in _CODE_LANGS
        # One-line block: ```repl print(1)```
        if rest.rstrip().endswith("```") and rest.strip() != "```":
            body = rest.rstrip()[:-3].rstrip("`").rstrip()
            if is_code and body.strip():
                blocks.append(body)
            i += 1
            continue
        if not lang and rest.strip():
            prose.append(line)   # ``` followed by text: not a fence we understand
            i += 1
            continue
        body_lines: list[str] = []
        if rest.strip():
            body_lines.append(rest)
        i += 1
        closed = False
        while i < n:
            cur = lines[i]
            stripped = cur.strip()
            if stripped.startswith("```") and _CLOSING_TAGS.match(stripped.strip("`").strip()):
                i += 1
                closed = True
                break
            if stripped.endswith("```") and not stripped.startswith("```"):
                body_lines.append(cur.rstrip()[:-3].rstrip("`").rstrip())
                i += 1
                closed = True
                break
            body_lines.append(cur)
            i += 1
        if is_code:
            body = "\n".join(body_lines).strip("\n")
            if body.strip():
                blocks.append(body)
                unclosed = not closed
    prose_text = "\n".join(prose)
    if blocks:
        return ParsedReply(blocks, find_textual_final(prose_text), prose_text, unclosed)
    # No fenced code: the reply may use a tool-call dialect instead.
    calls, prose_text = _tool_calls(prose_text)
    final = find_textual_final(prose_text)
    for call in calls:
        if call.kind == "code":
            blocks.append(call.value)
        elif call.kind in ("FINAL", "FINAL_VAR") and final is None:
            final = TextualFinal(call.kind, call.value, call.value)
    return ParsedReply(blocks, final, prose_text, False,
                       tuple(dict.fromkeys(c.dialect for c in calls if c.kind != "unknown")),
                       tuple(c.name for c in calls if c.kind == "unknown"))


def find_textual_final(text: str) -> TextualFinal | None:
    """The first ``FINAL(...)`` / ``FINAL_VAR(...)`` at the start of a line, parentheses balanced.

    The argument may span lines, contain nested calls and quoted strings with parentheses. An
    argument that is a Python string literal is unquoted; anything else is taken as written.
    """
    for m in _FINAL_START.finditer(text):
        open_at = m.end() - 1
        close_at = _matching_paren(text, open_at)
        if close_at is None:   # a stray quote in prose (the users' files): count parentheses only
            close_at = _matching_paren(text, open_at, strings=False)
        if close_at is None:
            continue
        raw = text[open_at + 1:close_at].strip()
        via = m.group(1)
        if via == "FINAL_VAR":
            name = _unquote(raw).strip()
            if not _IDENT.match(name):
                continue
            return TextualFinal("FINAL_VAR", name, raw)
        return TextualFinal("FINAL", _unquote(raw), raw)
    return None


def _unquote(raw: str) -> str:
    if raw[:1] in {"'", '"'} or raw[:2].lower() in {"f'", 'f"', "r'", 'r"'} or raw[:3] in {'"""', "'''"}:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
        if isinstance(value, str):
            return value
    return raw


def _matching_paren(text: str, open_at: int, *, strings: bool = True) -> int | None:
    """Index of the ``)`` closing the ``(`` at ``open_at``; strings and escapes respected."""
    depth = 0
    i = open_at
    n = len(text)
    quote: str | None = None
    while i < n:
        c = text[i]
        if quote is not None:
            if c == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
            if len(quote) == 1 and c == "\n":
                quote = None   # an unterminated short string ends at the line (prose apostrophes)
            i += 1
            continue
        if strings and c in "\"'":
            triple = text[i:i + 3]
            if triple in ('"""', "'''"):
                quote = triple
                i += 3
                continue
            # An apostrophe inside a word (don't, it's) is prose, not a string.
            if c == "'" and i > 0 and text[i - 1].isalnum() and i + 1 < n and text[i + 1].isalnum():
                i += 1
                continue
            quote = c
            i += 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


# -- tool-call dialects ----------------------------------------------------------------------------
# Anthropic-style:  <function_calls><invoke name="python"><parameter name="code">…</parameter></invoke>
# Qwen/Hermes:      <tool_call>{"name": "python", "arguments": {"code": "…"}}</tool_call>
# A call runs only when its intent is unambiguous: a Python/REPL tool with its code, or a final-answer
# tool with its answer. Anything else (a shell, a search tool) is reported back as not available.
_NS = r"(?:[\w-]+:)?"   # some models put a namespace prefix on the tags (antml:invoke)
_CALLS = re.compile(
    rf"<{_NS}function_calls\s*>(?P<fc>.*?)</{_NS}function_calls\s*>"
    rf"|<{_NS}invoke\s+name\s*=\s*[\"'](?P<iname>[^\"']*)[\"']\s*>(?P<ibody>.*?)</{_NS}invoke\s*>"
    rf"|<tool_call\s*>(?P<tc>.*?)</tool_call\s*>",
    re.DOTALL)
_INVOKE = re.compile(rf"<{_NS}invoke\s+name\s*=\s*[\"']([^\"']*)[\"']\s*>(.*?)</{_NS}invoke\s*>", re.DOTALL)
_PARAM = re.compile(rf"<{_NS}parameter\s+name\s*=\s*[\"']([^\"']*)[\"']\s*>(.*?)</{_NS}parameter\s*>",
                    re.DOTALL)
_FENCED = re.compile(r"\s*```+[A-Za-z0-9_+-]*[ \t]*\n(.*?)\n?[ \t]*```+\s*", re.DOTALL)
_CODE_TOOL = re.compile(r"^(?:(?:run|execute|exec)_?)?(?:python3?|repl|python_repl|ipython|code|"
                        r"code_interpreter|cell)$|^(?:run|execute|exec)$")
_CODE_PARAMS = ("code", "source", "script", "python", "cell", "input")
_FINAL_TOOLS = {"final", "final_answer", "finalanswer", "submit", "submit_answer", "answer", "finish"}
_FINAL_PARAMS = ("answer", "content", "value", "final_answer", "result", "text")


@dataclass(frozen=True, slots=True)
class _Call:
    dialect: str   # "invoke" | "tool_call"
    name: str      # the tool's name as written
    kind: str      # "code" | "FINAL" | "FINAL_VAR" | "unknown"
    value: str = ""


def _tool_calls(text: str) -> tuple[list[_Call], str]:
    """The tool calls in ``text``, in order, and the text with them removed."""
    calls: list[_Call] = []
    rest: list[str] = []
    pos = 0
    for m in _CALLS.finditer(text):
        rest.append(text[pos:m.start()])
        pos = m.end()
        if m.group("fc") is not None:
            calls += [_interpret("invoke", name, _params(body)) for name, body in _INVOKE.findall(m.group("fc"))]
        elif m.group("iname") is not None:
            calls.append(_interpret("invoke", m.group("iname"), _params(m.group("ibody"))))
        else:
            calls.append(_json_call(m.group("tc")))
    rest.append(text[pos:])
    return calls, "".join(rest)


def _params(body: str) -> dict[str, str]:
    return {name: value for name, value in _PARAM.findall(body)}


def _json_call(body: str) -> _Call:
    try:
        obj = json.loads(body, strict=False)   # models often put raw newlines inside the code string
    except ValueError:
        return _Call("tool_call", "(not valid JSON)", "unknown")
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return _Call("tool_call", "(no tool name)", "unknown")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):   # OpenAI's wire form: the arguments as a JSON string
        try:
            args = json.loads(args, strict=False)
        except ValueError:
            args = {"code": args}
    if not isinstance(args, dict):
        return _Call("tool_call", obj["name"], "unknown")
    return _interpret("tool_call", obj["name"], {str(k): v for k, v in args.items()})


def _interpret(dialect: str, name: str, params: dict[str, object]) -> _Call:
    key = name.strip().lower()
    if _CODE_TOOL.match(key):
        code = _pick(params, _CODE_PARAMS)
        if code is not None and code.strip():
            return _Call(dialect, name, "code", _unfence(code))
    elif key in _FINAL_TOOLS:
        answer = _pick(params, _FINAL_PARAMS)
        if answer is not None and answer.strip():
            return _Call(dialect, name, "FINAL", answer.strip())
    elif key == "final_var":
        var = _pick(params, ("name", "variable", "var", "var_name"))
        if var is not None and _IDENT.match(var.strip().strip("'\"")):
            return _Call(dialect, name, "FINAL_VAR", var.strip().strip("'\""))
    return _Call(dialect, name, "unknown")


def _pick(params: dict[str, object], names: tuple[str, ...]) -> str | None:
    """The parameter with one of ``names`` (in that order), or the only parameter there is."""
    for n in names:
        if n in params:
            value = params[n]
            break
    else:
        if len(params) != 1:
            return None
        value = next(iter(params.values()))
    if isinstance(value, str):
        return value
    return None if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _unfence(code: str) -> str:
    m = _FENCED.fullmatch(code)
    return (m.group(1) if m else code).strip("\n")


# The official RLM library's newer protocol: the REPL holds ``answer = {"content": "", "ready": False}``
# and the model ends the run with ``answer["content"] = …`` / ``answer["ready"] = True`` in code.
_ANSWER_NAME = re.compile(r"\banswer\b")
_READY = re.compile(r"""['"]ready['"]|\bready\s*=""")
_ANSWER_KEY = re.compile(r"""\banswer\s*\[\s*['"](?:content|ready)['"]\s*\]""")


def uses_answer_dict(code: str) -> bool:
    """Whether ``code`` may deliver its answer through the ``answer`` dict (mentions ``answer`` and
    ``ready``); the engine then looks at ``answer["ready"]`` after the cell ran."""
    return bool(_ANSWER_NAME.search(code) and _READY.search(code))


def needs_answer_dict(code: str) -> bool:
    """Whether ``code`` uses ``answer["content"]``/``answer["ready"]`` (so the dict must exist first)."""
    return bool(_ANSWER_KEY.search(code))
