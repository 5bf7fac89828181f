"""`rlm-desktop bench [NAME…] [--json]`: run the benchmarks of a source checkout (tests/bench)."""

# Each tests/bench/bench_<name>.py exposes run(args) -> dict of figures. Units come from a word
# of the key (_ms, _s, _mb, _pct, as in read_s_median); "ok" says whether the goal was met. Timing
# goals live here, not in the test suite, because they depend on the machine.

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from rlm_desktop.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

UNITS = {"ms": "ms", "s": "s", "mb": "MB", "pct": "%", "us": "µs"}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="run the benchmarks (needs a source checkout)",
                              description="Run the benchmarks in tests/bench of a source checkout "
                                          "and print their figures.")
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object {name: figures}")
    p.set_defaults(handler=handle)


def bench_dir() -> Path:
    import rlm_desktop

    return Path(rlm_desktop.__file__).resolve().parents[1] / "tests" / "bench"


def discover(folder: Path) -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(folder.glob("bench_*.py"))}


def _load(name: str, path: Path) -> ModuleType:
    root = str(path.parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)       # so benchmarks can import tests.fakeserver and friends
    spec = importlib.util.spec_from_file_location(f"tests.bench.bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _unit(key: str) -> tuple[str, str]:
    """("overhead median", "ms") for "overhead_ms_median": the unit is a word of the key."""
    words = key.split("_")
    for i, w in enumerate(words):
        if w in UNITS and i > 0:
            return " ".join(words[:i] + words[i + 1:]), UNITS[w]
    return " ".join(words), ""


def format_table(results: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for name, figures in results.items():
        ok = figures.get("ok")
        status = "" if ok is None else ("  [goal met]" if ok else "  [GOAL MISSED]")
        lines.append(f"{name}{status}")
        rows = [(k, v) for k, v in figures.items() if k not in ("name", "ok")]
        labels = [_unit(k) for k, _ in rows]
        width = max((len(lbl) for lbl, _ in labels), default=10)
        for (_, value), (label, unit) in zip(rows, labels, strict=True):
            shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
            lines.append(f"  {label:<{width}}  {shown} {unit}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def handle(args: argparse.Namespace) -> int:
    folder = bench_dir()
    if not folder.is_dir():
        print("rlm-desktop bench: the benchmarks need a source checkout (tests/bench was not found "
              f"next to the package at {folder.parent.parent}); clone the repository and run "
              "`rlm-desktop bench` from its environment.", file=sys.stderr)
        return EXIT_USAGE
    available = discover(folder)
    names = list(args.names) or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"rlm-desktop bench: unknown benchmark {unknown[0]!r}; available: "
              f"{', '.join(available) or 'none'}", file=sys.stderr)
        return EXIT_USAGE
    results: dict[str, dict[str, Any]] = {}
    failed = False
    for name in names:
        if not args.json:
            print(f"running {name} …", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            figures = dict(_load(name, available[name]).run(argparse.Namespace()))
        except Exception as exc:   # one broken benchmark must not hide the others: report it
            figures = {"error": f"{type(exc).__name__}: {exc}", "ok": False}
            failed = True
        figures.setdefault("wall_s", round(time.perf_counter() - t0, 2))
        results[name] = figures
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
    else:
        print(format_table(results), end="")
    return EXIT_FAILURE if failed else EXIT_OK
