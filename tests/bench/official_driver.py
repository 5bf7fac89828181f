"""Drive the official RLM library (alexzhang13/rlm, ``pip install rlms``) for bench_official.

Run by *its* interpreter (a virtualenv of its own, outside this repository: the library is not a
dependency of RLM Desktop): ``python official_driver.py BASE_URL RUNS ITERATIONS`` runs RUNS
completions of the scripted ``iterations`` run (tests/bench/serve.py) with the local REPL, no
logger, not verbose, and prints one JSON line: the wall and CPU seconds of each completion
(``{"walls": [...], "cpus": [...]}``).
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> None:
    from rlm import RLM

    base_url, runs, iterations = argv[0], int(argv[1]), int(argv[2])
    walls = []
    cpus = []
    for _ in range(runs):
        rlm = RLM(backend="openai",
                  backend_kwargs={"model_name": "r", "base_url": base_url, "api_key": "bench-key"},
                  environment="local", max_iterations=iterations + 2, verbose=False)
        t0, c0 = time.perf_counter(), time.process_time()
        result = rlm.completion("benchmark context " * 100, root_prompt="benchmark")
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if str(result.response).strip() != str(iterations - 1):
            raise SystemExit(f"the official run answered {result.response!r}")
    print(json.dumps({"walls": walls, "cpus": cpus}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
