"""Smoke test of a built PyInstaller bundle: it starts, exports a trace, and runs model code in its sandbox.

Usage (from a source checkout, with the dev venv): ``.venv/bin/python packaging/smoke_bundle.py
dist/rlm-desktop/rlm-desktop``. Uses the offline demo provider and the scripted OpenAI-compatible
server of tests/fakeserver.py (127.0.0.1 only). Exit 0 when every check passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CELL = ("```repl\nimport statistics, fractions, decimal, csv\n"
        "print('MEAN', statistics.mean([1, 2, 3, 4]), len(context))\n```")


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180,  # type: ignore[call-overload]
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, **kw)


def main(bundle: str) -> int:
    from rlm_desktop.core.trace import read_trace
    from tests.fakeserver import FakeOpenAI

    failures: list[str] = []
    samples = ROOT / "resources" / "samples"
    with tempfile.TemporaryDirectory(prefix="rlm-bundle-smoke-") as tmp:
        r = run([bundle, "--version"])
        if r.returncode != 0 or "rlm-desktop" not in r.stdout:
            failures.append(f"--version: {r.returncode} {r.stderr.strip()[-300:]}")
        demo_trace = Path(tmp) / "demo.jsonl"
        r = run([bundle, "run", "--docs", str(samples), "--query", "Which suppliers were late?",
                 "--json", "--trace", str(demo_trace)])
        if r.returncode != 0:
            failures.append(f"demo run: exit {r.returncode}: {r.stderr.strip()[-500:]}")
        r = run([bundle, "export", str(demo_trace), "-o", str(Path(tmp) / "demo.html")])
        if r.returncode != 0 or not (Path(tmp) / "demo.html").exists():
            failures.append(f"export: exit {r.returncode}: {r.stderr.strip()[-300:]}")
        with FakeOpenAI() as srv:
            srv.script(CELL, "FINAL(done)")
            trace_path = Path(tmp) / "stdlib.jsonl"
            r = subprocess.run([bundle, "run", "--docs", str(samples), "--query", "q", "--base-url",
                                srv.base_url, "--model", "m", "--json", "--trace", str(trace_path)],
                               capture_output=True, text=True, timeout=180,
                               env={"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "smoke-test-key"})
            if r.returncode != 0:
                failures.append(f"scripted run: exit {r.returncode}: {r.stderr.strip()[-500:]}")
            else:
                cells = [s for s in read_trace(trace_path) if s.kind == "code_cell"]
                out = cells[0].attributes.get("stdout") or "" if cells else ""
                if "MEAN 2.5" not in out:
                    err = cells[0].attributes.get("error") if cells else "no code cell"
                    failures.append(f"model code could not import the standard library in the sandbox: "
                                    f"{str(err)[-400:]}")
                if json.loads(r.stdout).get("answer") != "done":
                    failures.append("scripted run did not finish with the scripted answer")
    for f in failures:
        print(f"bundle smoke test FAILED: {f}", file=sys.stderr)
    if not failures:
        print("bundle smoke test passed: starts, runs the demo, exports, runs model code in its sandbox")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python packaging/smoke_bundle.py dist/rlm-desktop/rlm-desktop", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
