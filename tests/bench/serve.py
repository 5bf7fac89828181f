"""A scripted server for the benchmarks, in a process of its own (so its threads do not share the
benchmark's interpreter lock, as a real provider would not).

``python -m tests.bench.serve SCRIPT LATENCY`` prints the base URL on its first line, then serves
until stdin closes. Scripts (stateless: the reply depends on the request alone):

* ``fanout:N``: the root's first reply is a cell sending N prompts through ``llm_query_batched``
  and printing how many good answers came back; its next reply is ``FINAL`` of that number; a
  sub-call (no system prompt) is answered ``ok <its prompt>``.
"""

from __future__ import annotations

import sys

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


def main(argv: list[str]) -> None:
    script, latency = argv[0], float(argv[1])
    name, _, arg = script.partition(":")
    if name != "fanout":
        raise SystemExit(f"unknown script {script!r}")
    with FakeOpenAI() as srv:
        srv.latency = latency
        srv.handler = fanout(int(arg or 256))
        print(srv.base_url, flush=True)
        sys.stdin.read()                       # until the benchmark closes our stdin


if __name__ == "__main__":
    main(sys.argv[1:])
