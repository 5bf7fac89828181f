"""Evaluation output: the terminal table, the JSON object, and a self-contained HTML report whose
inline SVG charts show accuracy and cost against context size per method (no script, no network)."""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlm_desktop.engine.demo import DEMO_LABEL
from rlm_desktop.evaluation.runner import EvalOutcome, Row
from rlm_desktop.evaluation.tasks import format_size

METHOD_COLOURS = {"rlm": "#2563eb", "direct": "#ea580c"}
_FALLBACK_COLOURS = ("#059669", "#7c3aed", "#db2777")


def cost_text(row: Row) -> str:
    """'$0.0123', '~$0.0123' (from estimated tokens), '$0.0123+?' (partly unknown), 'unknown', '-'."""
    if row.cost_usd is None:
        return "unknown" if row.items else "-"
    text = f"${row.cost_usd:.4f}"
    if not row.cost_known:
        text += "+?"
    if row.tokens_estimated and row.cost_usd:
        text = "~" + text
    return text


def _acc(row: Row) -> str:
    return "-" if row.accuracy is None else f"{row.accuracy:.3f}"


def table(rows: Sequence[Row]) -> str:
    """A plain-text table ('~' marks token counts or cost estimated from characters / 4)."""
    head = ("task", "size", "method", "items", "accuracy", "cost", "in tokens", "out tokens",
            "seconds", "failures", "note")
    body = []
    for r in rows:
        est = "~" if r.tokens_estimated else ""
        ran = bool(r.items)
        body.append((r.task, format_size(r.size), r.method, str(r.items), _acc(r), cost_text(r),
                     f"{est}{r.input_tokens:,}" if ran else "-", f"{est}{r.output_tokens:,}" if ran else "-",
                     f"{r.seconds:.1f}" if ran else "-", str(r.failures), r.note or ""))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    right = {3, 4, 5, 6, 7, 8, 9}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    out = [line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    return "\n".join(out)


def to_json(outcome: EvalOutcome, meta: dict[str, Any]) -> dict[str, Any]:
    """The `--json` object: ``results`` (a row per task × size × method) plus the items and why the
    evaluation stopped early, if it did."""
    return {**meta, "results": [r.to_dict() for r in outcome.rows],
            "items": [r.to_dict() for r in outcome.results],
            "stopped": outcome.stopped, "completed_runs": sum(r.counted for r in outcome.results),
            "planned_runs": outcome.planned_items, "notes": outcome.notes}


# -- HTML -----------------------------------------------------------------------------------------

_W, _H = 420, 240
_ML, _MR, _MT, _MB = 56, 16, 28, 44


def _colour(method: str, i: int) -> str:
    return METHOD_COLOURS.get(method, _FALLBACK_COLOURS[i % len(_FALLBACK_COLOURS)])


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def chart(title: str, rows: Sequence[Row], field: str, *, y_label: str, y_max: float | None = None,
          fmt: str = "{:.2f}", empty: str = "no finished runs") -> str:
    """An SVG line chart of ``field`` against size (log scale) with one line per method."""
    pts: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        v = getattr(r, field)
        if v is not None and r.items:
            pts.setdefault(r.method, []).append((r.size, float(v)))
    sizes = sorted({r.size for r in rows})
    top = y_max if y_max is not None else _nice_max(max((v for p in pts.values() for _, v in p), default=0))
    pw, ph = _W - _ML - _MR, _H - _MT - _MB
    lo, hi = (math.log10(sizes[0]), math.log10(sizes[-1])) if sizes else (0.0, 1.0)

    def x(size: int) -> float:
        if hi == lo:
            return _ML + pw / 2
        return _ML + (math.log10(size) - lo) / (hi - lo) * pw

    def y(v: float) -> float:
        return _MT + ph - (v / top) * ph if top else _MT + ph

    e = html.escape
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
           f'role="img" aria-label="{e(title)}">',
           f'<text x="{_ML}" y="16" font-size="13" font-weight="600">{e(title)}</text>']
    for k in range(5):                                   # horizontal grid and y ticks
        v = top * k / 4
        yy = y(v)
        svg.append(f'<line x1="{_ML}" y1="{yy:.1f}" x2="{_W - _MR}" y2="{yy:.1f}" stroke="#e5e7eb"/>')
        svg.append(f'<text x="{_ML - 6}" y="{yy + 4:.1f}" font-size="10" text-anchor="end">'
                   f'{e(fmt.format(v))}</text>')
    for s in sizes:                                      # x ticks: the sizes run
        svg.append(f'<line x1="{x(s):.1f}" y1="{_MT + ph}" x2="{x(s):.1f}" y2="{_MT + ph + 4}" stroke="#6b7280"/>')
        svg.append(f'<text x="{x(s):.1f}" y="{_MT + ph + 16}" font-size="10" text-anchor="middle">'
                   f'{e(format_size(s))}</text>')
    svg.append(f'<line x1="{_ML}" y1="{_MT + ph}" x2="{_W - _MR}" y2="{_MT + ph}" stroke="#6b7280"/>')
    svg.append(f'<line x1="{_ML}" y1="{_MT}" x2="{_ML}" y2="{_MT + ph}" stroke="#6b7280"/>')
    svg.append(f'<text x="{_ML + pw / 2}" y="{_H - 6}" font-size="11" text-anchor="middle">'
               'context size (characters, log scale)</text>')
    svg.append(f'<text x="12" y="{_MT + ph / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {_MT + ph / 2})">{e(y_label)}</text>')
    # The direct method is drawn first, dashed, with larger hollow squares: where both methods
    # score the same, its markers stay visible around RLM's dots.
    methods = sorted(pts, key=lambda m: (m != "direct", m))
    for i, method in enumerate(methods):
        p = sorted(pts[method])
        c = _colour(method, i)
        hollow = method == "direct"
        if len(p) > 1:
            path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in p)
            dash = ' stroke-dasharray="6 4"' if hollow else ""
            svg.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for s, v in p:
            tip = f'<title>{e(method)} {e(format_size(s))}: {e(fmt.format(v))}</title>'
            if hollow:
                svg.append(f'<rect x="{x(s) - 6:.1f}" y="{y(v) - 6:.1f}" width="12" height="12" fill="none" '
                           f'stroke="{c}" stroke-width="2">{tip}</rect>')
            else:
                svg.append(f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="4" fill="{c}">{tip}</circle>')
    for i, method in enumerate(sorted(pts, key=lambda m: (m != "rlm", m))):     # legend
        c = _colour(method, i)
        lx, ly = _W - _MR - 110 + 58 * i, 7          # in the title row, clear of the lines
        mark = (f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="none" stroke="{c}" stroke-width="2"/>'
                if method == "direct" else f'<circle cx="{lx + 5}" cy="{ly + 5}" r="5" fill="{c}"/>')
        svg.append(f'{mark}<text x="{lx + 14}" y="{ly + 9}" font-size="11">{e(method)}</text>')
    if not pts:
        svg.append(f'<text x="{_ML + pw / 2}" y="{_MT + ph / 2}" font-size="12" text-anchor="middle" '
                   f'fill="#6b7280">{e(empty)}</text>')
    svg.append("</svg>")
    return "".join(svg)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#111827;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.meta{color:#4b5563;margin-bottom:12px} .charts{display:flex;flex-wrap:wrap;gap:16px}
.charts svg{border:1px solid #e5e7eb;border-radius:6px;background:#fff}
table{border-collapse:collapse;margin:8px 0} th,td{border-bottom:1px solid #e5e7eb;padding:4px 10px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums} .warn{color:#b45309}
details{margin:8px 0} code{font-size:12px}
"""


def to_html(outcome: EvalOutcome, meta: dict[str, Any], out_dir: Path) -> str:
    """The report: summary, one pair of charts per task, the result table and every item."""
    e = html.escape
    rows = outcome.rows
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<title>RLM Desktop evaluation</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>RLM Desktop evaluation: RLM vs a direct call</h1>",
             f"<div class='meta'>provider {e(str(meta.get('provider')))} · root model "
             f"{e(str(meta.get('root_model')))} · sub model {e(str(meta.get('sub_model')))} · seed "
             f"{e(str(meta.get('seed')))} · {e(str(meta.get('created', '')))}"
             + (f" · <b>{html.escape(DEMO_LABEL)}</b>" if meta.get("demo") else "")
             + "</div>"]
    if outcome.stopped:
        parts.append(f"<p class='warn'>Stopped early ({e(outcome.stopped)}); the results below are "
                     "partial.</p>")
    for note in outcome.notes:
        parts.append(f"<p class='warn'>Note: {e(note)}</p>")
    for task in dict.fromkeys(r.task for r in rows):
        tr = [r for r in rows if r.task == task]
        parts.append(f"<h2>{e(task)}</h2><div class='charts'>")
        parts.append(chart(f"{task}: accuracy", tr, "accuracy", y_label="accuracy (0–1)", y_max=1.0))
        parts.append(chart(f"{task}: cost per run (USD)", [per_item_cost(r) for r in tr], "cost_usd",
                           y_label="USD per item", fmt="{:.4f}", empty=cost_chart_empty(tr)))
        parts.append("</div>")
        skipped = [r for r in tr if r.skipped and not r.items]
        if skipped:
            parts.append("<p class='meta'>" + "; ".join(
                f"{e(r.method)} at {e(format_size(r.size))}: {e(r.note or 'skipped')}" for r in skipped)
                + "</p>")
    parts.append("<h2>Results</h2><table><tr>" + "".join(
        f"<th>{h}</th>" for h in ("task", "size", "method", "items", "accuracy", "cost", "input tokens",
                                  "output tokens", "seconds", "failures", "note")) + "</tr>")
    for r in rows:
        est = "~" if r.tokens_estimated else ""
        ran = bool(r.items)
        tin, tout = (f"{est}{r.input_tokens:,}", f"{est}{r.output_tokens:,}") if ran else ("-", "-")
        parts.append(f"<tr><td>{e(r.task)}</td><td class='n'>{e(format_size(r.size))}</td><td>{e(r.method)}</td>"
                     f"<td class='n'>{r.items}</td><td class='n'>{_acc(r)}</td><td class='n'>{e(cost_text(r))}</td>"
                     f"<td class='n'>{tin}</td><td class='n'>{tout}</td>"
                     f"<td class='n'>{f'{r.seconds:.1f}' if ran else '-'}</td><td class='n'>{r.failures}</td>"
                     f"<td>{e(r.note or '')}</td></tr>")
    parts.append("</table><p class='meta'>~ : tokens estimated (characters ÷ 4) where the server "
                 "reported no usage, and the cost priced from them. Cost per row is the sum over its "
                 "items.</p>")
    parts.append(f"<details><summary>Items ({len(outcome.results)})</summary><table><tr>"
                 "<th>task</th><th>size</th><th>#</th><th>method</th><th>status</th><th>score</th>"
                 "<th>expected</th><th>answer</th><th>trace</th></tr>")
    for it in outcome.results:
        link = ""
        if it.trace:
            rel = os.path.relpath(it.trace, out_dir)
            link = f"<a href='{e(rel)}'>{e(Path(it.trace).name)}</a>"
        answer = (it.answer or "")[:300]
        parts.append(f"<tr><td>{e(it.task)}</td><td>{e(format_size(it.size))}</td><td>{it.index + 1}</td>"
                     f"<td>{e(it.method)}</td><td>{e(it.status)}</td><td class='n'>{it.score:.2f}</td>"
                     f"<td><code>{e(str(it.expected))[:200]}</code></td><td><code>{e(answer)}</code></td>"
                     f"<td>{link}</td></tr>")
    parts.append("</table></details></body></html>")
    return "\n".join(parts)


def cost_chart_empty(rows: Sequence[Row]) -> str:
    """What an empty cost chart says: the cost is unknown (no price), or nothing finished."""
    if any(r.items and r.cost_usd is None for r in rows):
        return "cost unknown: no price for the model"
    return "no finished runs"


def per_item_cost(row: Row) -> Row:
    """The row with its cost divided by its items (what the cost chart plots)."""
    from dataclasses import replace

    if row.cost_usd is None or not row.items:
        return row
    return replace(row, cost_usd=row.cost_usd / row.items)


def write_outputs(outcome: EvalOutcome, meta: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write ``results.json`` and ``report.html`` under ``out_dir`` (each whole or not at all);
    returns the JSON object."""
    from rlm_desktop.core.paths import write_text_atomic

    obj = to_json(outcome, meta)
    write_text_atomic(Path(out_dir) / "results.json", json.dumps(obj, indent=1, ensure_ascii=False))
    write_text_atomic(Path(out_dir) / "report.html", to_html(outcome, meta, Path(out_dir)))
    return obj
