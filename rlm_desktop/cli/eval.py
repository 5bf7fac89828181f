"""`rlm-desktop eval`: does an RLM beat one direct call on this model, for documents like mine?"""

# Provider, models and per-run limits are chosen exactly as `rlm-desktop run` chooses them (the
# same functions). Exit codes: 0 finished; 2 usage / bad input; 3 the budget stopped it early;
# 4 cancelled (SIGINT/SIGTERM: running items are cancelled, finished ones are kept and written);
# 5 runs kept failing (three in a row: a wrong key, model or URL), the finished ones are kept.

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlm_desktop.cli.exit_codes import EXIT_CANCELLED, EXIT_LIMIT, EXIT_OK, EXIT_PROVIDER, EXIT_USAGE


def add_parser(subparsers: Any) -> None:
    from rlm_desktop.cli.run import LIMIT_FLAGS

    p = subparsers.add_parser(
        "eval", help="compare RLM runs with direct calls on generated or your own tasks",
        description="Evaluate a model on long-context tasks, each item run as an RLM and (where the "
                    "context fits the model's window) as one direct call with the whole context. "
                    "Prints a table (or --json), writes every trace, results.json and report.html "
                    "(charts of accuracy and cost against context size) under --out.",
        epilog="tasks: needle (find a planted fact), aggregate (count/compare/rank dated labelled "
               "records), pairs (pairs of records meeting a condition, F1), multidoc (facts from two "
               "files), docs (--docs DIR --questions FILE.jsonl with question, answer, optional "
               "scorer: exact, numeric, label, set_f1, contains). exit codes: 0 finished; 2 usage; "
               "3 stopped by --budget-usd; 4 cancelled (partial results are kept); 5 three runs "
               "in a row failed (check the key, model and URL).")
    p.add_argument("--task", required=True, metavar="T[,T…]",
                   help="needle, aggregate, pairs, multidoc, docs (comma-separated)")
    p.add_argument("--sizes", default="8k,64k", metavar="S[,S…]",
                   help="context sizes in characters, e.g. 8k,64k,1m (default 8k,64k)")
    p.add_argument("--items", type=int, metavar="N",
                   help="items per task and size (default 5; for docs: every question)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--provider", metavar="ID", help="a provider profile, or 'demo' (offline dry run)")
    src.add_argument("--base-url", metavar="URL", help="any OpenAI-compatible server (key from OPENAI_API_KEY)")
    p.add_argument("--model", metavar="M", help="root model (and the direct method's model)")
    p.add_argument("--sub-model", metavar="M", help="model for llm_query sub-calls (default: --model)")
    p.add_argument("--methods", default="rlm,direct", metavar="M[,M]", help="rlm, direct (default both)")
    p.add_argument("--context-window", type=int, metavar="TOKENS",
                   help="the model's context window (default: the provider profile's); direct runs "
                        "only where the context fits (tokens estimated as characters / 4)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the generated tasks (default 0)")
    p.add_argument("--budget-usd", type=float, metavar="X",
                   help="budget of the whole evaluation; checked before each run (estimated)")
    p.add_argument("--concurrency", type=int, default=1, metavar="K", help="items run at once (default 1)")
    p.add_argument("--out", metavar="DIR", help="where traces and the report go (default: the data folder)")
    p.add_argument("--docs", metavar="DIR", help="your folder, for --task docs")
    p.add_argument("--questions", metavar="FILE", help="JSONL questions about --docs, for --task docs")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bar or notes on stderr")
    p.add_argument("--allow-weak-sandbox", action="store_true",
                   help="run even when the sandbox isolation is below 'good' (less protection)")
    for field, flag in LIMIT_FLAGS.items():      # the per-run limits of `run` (not its budget)
        if field != "budget_usd":
            p.add_argument(flag, type=float if field.endswith("_s") else int,
                           metavar="S" if field.endswith("_s") else "N",
                           help=f"per RLM run, as in `rlm-desktop run` ({field})")
    p.set_defaults(handler=handle)


def _err(msg: str) -> None:
    print(f"rlm-desktop eval: {msg}", file=sys.stderr, flush=True)


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def handle(args: argparse.Namespace) -> int:
    from rlm_desktop.cli.run import UsageError
    from rlm_desktop.engine.repl import harden_host_process
    from rlm_desktop.evaluation.tasks import TaskError

    harden_host_process()

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupted)   # the evaluation installs its own
    try:
        return _handle(args)
    except (UsageError, TaskError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("cancelled before the evaluation started (nothing was sent to a model)")
        return EXIT_CANCELLED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _handle(args: argparse.Namespace) -> int:

    from rlm_desktop.cli.run import (
        UsageError,
        _app_settings,
        _limits,
        _resolve_provider,
        build_config,
    )
    from rlm_desktop.core.config import RunLimits
    from rlm_desktop.evaluation.runner import METHODS, EvalPlan, new_out_dir
    from rlm_desktop.evaluation.scorers import SCORERS
    from rlm_desktop.evaluation.tasks import TASKS, load_questions, parse_size

    tasks = _split(args.task)
    bad = [t for t in tasks if t not in TASKS]
    if not tasks or bad:
        raise UsageError(f"unknown task {bad[0] if bad else args.task!r}: choose from {', '.join(TASKS)}")
    methods = _split(args.methods)
    if not methods or any(m not in METHODS for m in methods):
        raise UsageError(f"--methods takes {', '.join(METHODS)} (got {args.methods!r})")
    sizes = tuple(parse_size(s) for s in _split(args.sizes))
    if not sizes and any(t != "docs" for t in tasks):
        raise UsageError("--sizes is empty: give e.g. 8k,64k")
    for flag, value in (("--items", args.items), ("--concurrency", args.concurrency),
                        ("--context-window", args.context_window), ("--budget-usd", args.budget_usd)):
        if value is not None and value <= 0:
            raise UsageError(f"{flag} must be greater than 0 (got {value:g})")
    docs_context = None
    questions: tuple[Any, ...] = ()
    if "docs" in tasks:
        if not args.docs or not args.questions:
            raise UsageError("--task docs needs --docs DIR and --questions FILE.jsonl")
        if not os.path.lexists(args.docs):
            raise UsageError(f"no such file or folder: {args.docs}")
        questions = tuple(load_questions(Path(args.questions), SCORERS))[:args.items or None]
    elif args.docs or args.questions:
        raise UsageError("--docs and --questions belong to --task docs (add docs to --task)")
    run_args = argparse.Namespace(**{**vars(args), "budget_usd": None, "query": "eval"})
    _limits(run_args, RunLimits())          # a bad limit flag is said before anything is read
    settings, settings_note = _app_settings()
    provider, note = _resolve_provider(run_args, settings, settings_note)
    if note:
        _err(note if not args.quiet else note.split(".")[0] + ".")
    if docs_context is None and questions:
        from rlm_desktop.core.documents import load_documents

        docs = load_documents([args.docs])
        for bad_doc in docs.errors:
            _err(f"skipped {bad_doc.rel_path}: {bad_doc.error}")
        if not docs.documents:
            raise UsageError(f"no readable documents in {args.docs}")
        docs_context = docs.context_value()
    config = build_config(run_args, settings, provider, "(set per item)",
                          allow_weak=bool(args.allow_weak_sandbox))
    plan = EvalPlan(tasks=tuple(tasks), sizes=sizes, items=args.items or 5, methods=tuple(methods),
                    seed=args.seed, docs_context=docs_context, docs_questions=questions)
    out_dir = Path(args.out) if args.out else new_out_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write to --out {out_dir}: {exc.strerror or exc}") from None
    return asyncio.run(_evaluate(args, plan, provider, config, out_dir))


class _Bar:
    """A progress bar on stderr (only on a terminal): runs done of planned, spend, what runs now."""

    def __init__(self, total: int, budget: float | None) -> None:
        self.total = max(1, total)
        self.budget = budget
        self.done = 0
        self.cost = 0.0
        self.now = ""
        self.shown = False

    def __call__(self, kind: str, payload: Any) -> None:
        from rlm_desktop.evaluation.tasks import format_size

        if kind == "started":
            task, size, index, method = payload
            self.now = f"{task} {format_size(size)} #{index + 1} {method}"
        elif kind == "finished":
            self.done += 1
            self.cost += payload.cost_usd or 0.0
        self.draw()

    def draw(self) -> None:
        width = 24
        fill = int(width * min(self.done, self.total) / self.total)
        spend = f"${self.cost:.4f}" + (f" of ${self.budget:g}" if self.budget is not None else "")
        line = f"[{'#' * fill}{'-' * (width - fill)}] {self.done}/{self.total} runs · {spend} · {self.now}"
        sys.stderr.write("\r\x1b[2K" + line[:160])
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


async def _evaluate(args: argparse.Namespace, plan: Any, provider: Any, config: Any, out_dir: Path) -> int:
    from rlm_desktop.engine.providers import aclose_clients
    from rlm_desktop.engine.run import price_warning
    from rlm_desktop.evaluation import report
    from rlm_desktop.evaluation.runner import EvalOutcome, Evaluation, summarise
    from rlm_desktop.session.session import trace_header

    def header(cfg: Any, prov: Any, count: int, chars: int) -> dict[str, Any]:
        return trace_header(cfg.query, prov, cfg.root_model, cfg.sub_model, count, chars, source="eval")

    warning = price_warning(config, provider)
    if warning and not args.quiet:
        _err(f"warning: {warning}")
    bar = _Bar(len(plan.jobs()) * len(plan.methods), args.budget_usd) \
        if not args.quiet and sys.stderr.isatty() else None
    ev = Evaluation(plan, provider=provider, config=config, out_dir=out_dir, header=header,
                    context_window=args.context_window, budget_usd=args.budget_usd,
                    concurrency=args.concurrency, on_progress=bar)
    meta = {"provider": provider.name, "demo": bool(provider.is_demo), "root_model": config.root_model,
            "sub_model": config.sub_model, "seed": plan.seed, "context_window": ev.window,
            "budget_usd": args.budget_usd, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "out": str(out_dir), "report": str(out_dir / "report.html")}

    def write(outcome: EvalOutcome) -> dict[str, Any]:
        return report.write_outputs(outcome, meta, out_dir)

    loop = asyncio.get_running_loop()
    signals_seen: list[int] = []

    def on_signal(signum: int) -> None:
        signals_seen.append(signum)
        name = signal.Signals(signum).name
        if len(signals_seen) == 1:
            ev.stop(f"cancelled by {name}")
        else:    # a second signal: write what is finished and leave now
            write(EvalOutcome(list(ev.results), summarise(ev.results, plan), f"cancelled by {name} "
                              "(twice: stopped at once)", ev.total_runs, ev.notes))
            os._exit(EXIT_CANCELLED)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        outcome = await ev.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await aclose_clients()
        if bar is not None:
            bar.clear()
    obj = write(outcome)
    if args.json:
        print(json.dumps(obj, ensure_ascii=False))
    else:
        print(report.table(outcome.rows))
    if not args.quiet:
        for n in outcome.notes:
            _err(f"note: {n}")
        _err(f"report: {out_dir / 'report.html'} (traces in {out_dir / 'traces'})")
    if outcome.stopped:
        _err(f"stopped early: {outcome.stopped}; the results are partial "
             f"({obj['completed_runs']} of {obj['planned_runs']} runs)")
        if outcome.stopped.startswith("errors"):
            return EXIT_PROVIDER
        return EXIT_CANCELLED if outcome.stopped.startswith("cancelled") else EXIT_LIMIT
    return EXIT_OK
