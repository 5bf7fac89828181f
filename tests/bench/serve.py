"""A scripted server for the benchmarks, in a process of its own (so its threads do not share the
benchmark's interpreter lock, as a real provider would not).

``python -m tests.bench.serve SCRIPT LATENCY`` prints the base URL on its first line, then serves
until stdin closes. Scripts (stateless: the reply depends on the request alone):

* ``fanout:N``: the root's first reply is a cell sending N prompts through ``llm_query_batched``
  and printing how many good answers came back; its next reply is ``FINAL`` of that number; a
  sub-call (no system prompt) is answered ``ok <its prompt>``.
* ``iterations:N[:official]``: N root iterations of a trivial cell, the last one ending the run
  (see :func:`iterations`); used to compare with the official RLM library.

When stdin closes it prints the arrival times of the chat requests (JSON list) and exits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fakeserver import FakeOpenAI, Request


def fanout(prompts: int):  # noqa: ANN201 - a handler for FakeOpenAI
    def handler(req: Request) -> str:
        if not req.system:
            return "ok " + req.last_user[:10]
        if not any(m.get("role") == "assistant" for m in req.messages):
            return (f"```repl\nr = llm_query_batched([f'item {{i}}' for i in range({prompts})])\n"
                    "n = sum(1 for a in r if a.startswith('ok item'))\nprint(n)\n```")
        return "```repl\nFINAL(str(n))\n```"
    return handler


def iterations(n: int, dialect: str):  # noqa: ANN201 - a handler for FakeOpenAI
    """n root replies: a trivial cell each (``x = k; print(x)``), the n-th ending the run the
    dialect's way: ``FINAL(...)`` (ours) or ``answer["ready"] = True`` (the official RLM library)."""
    def handler(req: Request) -> str:
        k = 1 + sum(1 for m in req.messages if m.get("role") == "assistant")
        if k < n:
            return f"```repl\nx = {k}\nprint(x)\n```"
        if dialect == "official":
            return "```repl\nanswer['content'] = str(x)\nanswer['ready'] = True\n```"
        return "```repl\nFINAL(str(x))\n```"
    return handler


class ScriptedServer:
    """This module in a process of its own: ``with ScriptedServer("fanout:256", 0.2) as srv:``
    gives ``srv.url``; ``srv.finish()`` stops it and returns the chat requests' arrival times."""

    def __init__(self, script: str, latency: float = 0.0, python: str | None = None) -> None:
        root = str(Path(__file__).resolve().parents[2])
        self.proc = subprocess.Popen([python or sys.executable, "-m", "tests.bench.serve", script,
                                      str(latency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=root, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        self.times: list[float] | None = None
        if not self.url.startswith("http://127.0.0.1:"):
            self.finish()
            raise RuntimeError(f"the scripted server did not start (said {self.url!r})")

    def finish(self) -> list[float]:
        if self.times is None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            line = self.proc.stdout.read().strip()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.times = json.loads(line) if line else []
        return self.times

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def main(argv: list[str]) -> None:
    script, latency = argv[0], float(argv[1])
    name, _, arg = script.partition(":")
    if name == "fanout":
        handler = fanout(int(arg or 256))
    elif name == "iterations":
        n, _, dialect = arg.partition(":")
        handler = iterations(int(n), dialect or "ours")
    else:
        raise SystemExit(f"unknown script {script!r}")
    with FakeOpenAI() as srv:
        srv.latency = latency
        srv.handler = handler
        print(srv.base_url, flush=True)
        sys.stdin.read()                       # until the benchmark closes our stdin
        # then the arrival time of every chat request, one line of JSON
        print(json.dumps([r.time for r in srv.chat_requests]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
