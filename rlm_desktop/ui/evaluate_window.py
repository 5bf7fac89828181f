"""Tools → Evaluate: pick tasks, sizes, items, provider, models and budget; watch the evaluation
run on the engine thread; see the results table and the accuracy/cost charts; open any item's trace."""

# The evaluation itself is rlm_desktop.evaluation (the same runner as `rlm-desktop eval`); this
# window only collects the choices, submits the runner to the engine loop and shows what it
# reports. Progress arrives on the engine thread and crosses to the GUI through queued signals.

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QByteArray, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtSvgWidgets import QSvgWidget
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from rlm_desktop.core.config import ConfigError, RunConfig
from rlm_desktop.core.documents import load_documents
from rlm_desktop.evaluation import report
from rlm_desktop.evaluation.runner import (
    METHODS,
    EvalOutcome,
    EvalPlan,
    Evaluation,
    ItemResult,
    new_out_dir,
    summarise,
)
from rlm_desktop.evaluation.scorers import SCORERS
from rlm_desktop.evaluation.tasks import GENERATED_TASKS, TaskError, format_size, load_questions, parse_size
from rlm_desktop.ui.settings import provider_config_for

if TYPE_CHECKING:
    from rlm_desktop.ui.engine_bridge import EngineThread
    from rlm_desktop.ui.settings import Settings

log = logging.getLogger(__name__)

ROW_COLUMNS = ("task", "size", "method", "items", "accuracy", "cost", "in tokens", "out tokens",
               "seconds", "failures", "note")
ITEM_COLUMNS = ("task", "size", "#", "method", "status", "score", "answer", "trace")


class EvaluateWindow(QWidget):
    """A top-level window. ``open_trace(path)`` shows a trace (the main window's); ``engine`` is the
    app's engine thread (a private one is started when None)."""

    sig_progress = Signal(str, object)     # ("started", (task, size, index, method)) | ("finished", ItemResult)
    sig_finished = Signal(object)          # EvalOutcome, or an Exception when it could not run
    evaluation_finished = Signal(object)   # EvalOutcome (for whoever watches the window)

    def __init__(self, settings: Settings, *, engine: EngineThread | None = None,
                 open_trace: Callable[[Path], None] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("Evaluate: RLM vs a direct call")
        self.settings = settings
        self._own_engine = engine is None
        if engine is None:
            from rlm_desktop.ui.engine_bridge import EngineThread

            engine = EngineThread()
        self.engine = engine
        self.open_trace = open_trace
        self._evaluation: Evaluation | None = None
        self._future: concurrent.futures.Future[Any] | None = None
        self._stop_asked: str | None = None
        self._results: list[ItemResult] = []
        self._skipped_note = ""
        self._plan: EvalPlan | None = None
        self._total = 0
        self.out_dir: Path | None = None
        self.outcome: EvalOutcome | None = None
        self._build()
        self.sig_progress.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        self.sig_finished.connect(self._on_finished, Qt.ConnectionType.QueuedConnection)
        self.resize(1100, 760)

    # -- construction ---------------------------------------------------------------------------
    def _build(self) -> None:
        form = QFormLayout()
        tasks_row = QHBoxLayout()
        self.task_boxes: dict[str, QCheckBox] = {}
        for t in GENERATED_TASKS:
            box = QCheckBox(t)
            box.setChecked(t in ("needle", "aggregate"))
            self.task_boxes[t] = box
            tasks_row.addWidget(box)
        tasks_row.addStretch(1)
        form.addRow("Tasks", tasks_row)
        # The "your documents" task: a folder of the user's own and a JSONL file of questions about
        # it (question, answer, optional scorer), as `rlm-desktop eval --task docs`.
        docs_box = QCheckBox("your documents")
        docs_box.setToolTip("Your own folder and a JSONL file of questions about it, one object per "
                            'line: {"question": "…", "answer": "…", "scorer": "exact"} (scorer optional). '
                            "Every question is asked; the sizes above do not apply.")
        docs_box.toggled.connect(lambda _on: self._update_docs_fields())
        self.task_boxes["docs"] = docs_box
        form.addRow("", docs_box)
        self.docs_folder = QLineEdit()
        self.docs_folder.setPlaceholderText("folder of your documents")
        self.questions_file = QLineEdit()
        self.questions_file.setPlaceholderText("questions.jsonl")
        self._docs_rows: list[QWidget] = []
        for label, edit, pick in (("Folder", self.docs_folder, self._pick_docs_folder),
                                  ("Questions", self.questions_file, self._pick_questions_file)):
            row = QWidget()
            rl = QHBoxLayout(row)
            rl.setContentsMargins(0, 0, 0, 0)
            rl.addWidget(edit, 1)
            browse = QPushButton("Browse…")
            browse.clicked.connect(pick)
            rl.addWidget(browse)
            form.addRow(label, row)
            self._docs_rows.append(row)
        self.sizes = QLineEdit("8k,64k")
        self.sizes.setToolTip("Context sizes in characters, comma-separated: 8k, 64k, 1m …")
        form.addRow("Sizes", self.sizes)
        self.items = QSpinBox()
        self.items.setRange(1, 1000)
        self.items.setValue(3)
        self.items.setToolTip("Items of each generated task at each size (your documents: every question)")
        form.addRow("Items per task and size", self.items)
        self.provider = QComboBox()
        for prof in self.settings.providers():
            self.provider.addItem(prof.label, prof.id)
        self.provider.currentIndexChanged.connect(self._on_provider_changed)
        form.addRow("Provider", self.provider)
        self.root_model = QLineEdit()
        self.sub_model = QLineEdit()
        form.addRow("Root model", self.root_model)
        form.addRow("Sub model", self.sub_model)
        methods_row = QHBoxLayout()
        self.method_boxes: dict[str, QCheckBox] = {}
        for m in METHODS:
            box = QCheckBox(m)
            box.setChecked(True)
            self.method_boxes[m] = box
            methods_row.addWidget(box)
        methods_row.addStretch(1)
        form.addRow("Methods", methods_row)
        self.window_tokens = QSpinBox()
        self.window_tokens.setRange(0, 100_000_000)
        self.window_tokens.setSingleStep(1000)
        self.window_tokens.setSpecialValueText("from the provider profile")
        form.addRow("Context window (tokens)", self.window_tokens)
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0, 100_000)
        self.budget.setDecimals(2)
        self.budget.setPrefix("$")
        self.budget.setSpecialValueText("no budget")
        form.addRow("Budget (whole evaluation)", self.budget)
        self.concurrency = QSpinBox()
        self.concurrency.setRange(1, 64)
        form.addRow("Items at once", self.concurrency)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        form.addRow("Seed", self.seed)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.report_button = QPushButton("Open report")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(lambda: self.stop())
        self.report_button.clicked.connect(self.open_report)
        for b in (self.start_button, self.stop_button, self.report_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.progress = QProgressBar()
        self.status = QLabel("Choose what to evaluate, then Start.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.rows_table = _table(ROW_COLUMNS)
        self.items_table = _table(ITEM_COLUMNS)
        self.items_table.cellDoubleClicked.connect(self._on_item_double_clicked)
        self.items_table.setToolTip("Double-click an item to open its trace")
        self.chart_task = QComboBox()
        self.chart_task.currentIndexChanged.connect(lambda _i: self._draw_charts())
        self.accuracy_chart = QSvgWidget()
        self.cost_chart = QSvgWidget()
        for w in (self.accuracy_chart, self.cost_chart):
            w.setMinimumSize(300, 200)
        charts = QWidget()
        cl = QVBoxLayout(charts)
        cl.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(QLabel("Chart for task"))
        top.addWidget(self.chart_task)
        top.addStretch(1)
        cl.addLayout(top)
        pics = QHBoxLayout()
        pics.addWidget(self.accuracy_chart)
        pics.addWidget(self.cost_chart)
        pics.addStretch(1)
        cl.addLayout(pics)

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.addLayout(form)
        ll.addLayout(buttons)
        ll.addWidget(self.progress)
        ll.addWidget(self.status)
        ll.addStretch(1)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.rows_table)
        right.addWidget(charts)
        right.addWidget(self.items_table)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(split)
        self._on_provider_changed()
        self._update_docs_fields()
        self._update_buttons()

    def _update_docs_fields(self) -> None:
        on = self.task_boxes["docs"].isChecked()
        for row in self._docs_rows:
            row.setEnabled(on)

    def _pick_docs_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of your documents", self.docs_folder.text())
        if folder:
            self.docs_folder.setText(folder)

    def _pick_questions_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Questions about your documents",
                                              self.questions_file.text(), "JSON Lines (*.jsonl *.json);;All files (*)")
        if path:
            self.questions_file.setText(path)

    def _on_provider_changed(self) -> None:
        pid = self.provider.currentData()
        if pid is None:
            return
        prof = self.settings.profile(pid)
        self.root_model.setPlaceholderText(prof.root_model or "model name")
        self.sub_model.setPlaceholderText(prof.sub_model or prof.root_model or "same as the root model")
        for w in (self.root_model, self.sub_model):
            w.setEnabled(not prof.is_demo)

    # -- control --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._future is not None and not self._future.done()

    def _update_buttons(self) -> None:
        self.start_button.setEnabled(not self.running)
        self.stop_button.setEnabled(self.running)
        self.report_button.setEnabled(self.out_dir is not None and (self.out_dir / "report.html").exists())

    def _plan_from_form(self) -> tuple[EvalPlan, RunConfig, Any]:
        """The plan, the run config and the chosen profile; ConfigError/TaskError say what is wrong."""
        tasks = tuple(t for t, b in self.task_boxes.items() if b.isChecked())
        if not tasks:
            raise ConfigError("choose at least one task")
        methods = tuple(m for m, b in self.method_boxes.items() if b.isChecked())
        if not methods:
            raise ConfigError("choose at least one method (rlm, direct)")
        sizes = tuple(parse_size(s) for s in self.sizes.text().split(",") if s.strip())
        if not sizes and any(t != "docs" for t in tasks):
            raise ConfigError("give at least one size, e.g. 8k,64k")
        questions: tuple[Any, ...] = ()
        if "docs" in tasks:
            folder = self.docs_folder.text().strip()
            qfile = self.questions_file.text().strip()
            if not folder or not qfile:
                raise ConfigError("your documents: choose a folder and a questions file (JSONL)")
            if not Path(folder).is_dir():
                raise ConfigError(f"your documents: no such folder: {folder}")
            questions = tuple(load_questions(Path(qfile), SCORERS))
        prof = self.settings.profile(self.provider.currentData())
        root = prof.root_model if prof.is_demo else (self.root_model.text().strip() or prof.root_model)
        sub = prof.sub_model if prof.is_demo else (self.sub_model.text().strip() or prof.sub_model or root)
        if not root:
            raise ConfigError(f"no model chosen for {prof.label}: type the root model")
        config = RunConfig(query="(set per item)", root_model=root, sub_model=sub,
                           limits=self.settings.default_limits(), sandbox=self.settings.sandbox_limits(),
                           memo_cache=self.settings.memo_cache())
        plan = EvalPlan(tasks=tasks, sizes=sizes, items=self.items.value(), methods=methods,
                        seed=self.seed.value(), docs_questions=questions)
        return plan, config, prof

    def start(self) -> bool:
        """Start an evaluation with the form's choices; False (with the reason shown) if it cannot."""
        if self.running:
            return False
        try:
            plan, config, prof = self._plan_from_form()
        except (ConfigError, TaskError) as exc:
            self.status.setText(f"Cannot start: {exc}")
            return False
        self._plan = plan
        self._results = []
        self._stop_asked = None
        self._evaluation = None
        self._skipped_note = ""
        self.outcome = None
        self.out_dir = new_out_dir()
        self._total = len(plan.jobs()) * len(plan.methods)
        self.progress.setRange(0, self._total)
        self.progress.setValue(0)
        self.rows_table.setRowCount(0)
        self.items_table.setRowCount(0)
        self.chart_task.blockSignals(True)
        self.chart_task.clear()
        self.chart_task.addItems(list(plan.tasks))
        self.chart_task.blockSignals(False)
        self._draw_charts()
        window = self.window_tokens.value() or None
        budget = self.budget.value() or None
        concurrency = self.concurrency.value()
        out_dir = self.out_dir
        self.meta = {"provider": prof.name or prof.id, "demo": bool(prof.is_demo),
                     "root_model": config.root_model, "sub_model": config.sub_model, "seed": plan.seed,
                     "budget_usd": budget, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                     "out": str(out_dir), "report": str(out_dir / "report.html"), "source": "app"}

        docs_folder = self.docs_folder.text().strip()
        follow = self.settings.follow_outside_links()

        async def go() -> EvalOutcome:
            # The key may wait for a keyring unlock prompt: never on the GUI thread.
            provider = await asyncio.to_thread(provider_config_for, prof)
            plan_ = plan
            if "docs" in plan.tasks:
                # Read the folder off the GUI thread, with the same link rule as the Documents pane.
                docs = await asyncio.to_thread(load_documents, [docs_folder],
                                               follow_outside_links=follow)
                if not docs.documents:
                    raise TaskError(f"no readable documents in {docs_folder}"
                                    + "".join(f"; {d.rel_path}: {d.error}" for d in docs.errors[:3]))
                plan_ = replace(plan, docs_context=docs.context_value())
                self.sig_progress.emit("planned", (plan_, [(d.rel_path, d.error) for d in docs.errors]))
            if self.settings.allow_weak_sandbox():
                config_ = replace(config, sandbox=replace(config.sandbox, allow_weak=True))
            else:
                config_ = config
            ev = Evaluation(plan_, provider=provider, config=config_, out_dir=out_dir,
                            context_window=window, budget_usd=budget, concurrency=concurrency,
                            on_progress=lambda kind, payload: self.sig_progress.emit(kind, payload))
            self._evaluation = ev
            if self._stop_asked:
                ev.stop(self._stop_asked)
            return await ev.run()

        future = self.engine.submit(go())
        self._future = future
        future.add_done_callback(self._done)
        self.status.setText(f"Running {self._total} runs on {prof.label}, model {config.root_model}…")
        self._update_buttons()
        return True

    def _done(self, future: concurrent.futures.Future[Any]) -> None:   # on the engine thread
        try:
            outcome: Any = future.result()
        except concurrent.futures.CancelledError:
            outcome = RuntimeError("the evaluation was cancelled before it finished")
        except Exception as exc:   # reaches the user: shown in the window's status line
            log.exception("evaluation failed")
            outcome = exc
        self.sig_finished.emit(outcome)

    def stop(self, reason: str = "stopped by the user") -> None:
        """Stop: nothing new starts, running items are cancelled, finished ones are kept."""
        self._stop_asked = reason
        ev = self._evaluation
        if ev is not None:
            self.engine.call_soon(ev.stop, reason)
        self.status.setText("Stopping: cancelling the running items…")

    # -- progress and results -------------------------------------------------------------------
    def _on_progress(self, kind: str, payload: Any) -> None:
        if kind == "planned":          # the docs folder is read: its questions join the plan
            plan, skipped = payload
            self._plan = plan
            self._total = len(plan.jobs()) * len(plan.methods)
            self.progress.setRange(0, self._total)
            if skipped:
                self._skipped_note = (f" Skipped {len(skipped)} unreadable file(s) in your documents: "
                                      + "; ".join(f"{p}: {e}" for p, e in skipped[:3])
                                      + (" …" if len(skipped) > 3 else "") + ".")
            return
        if kind == "started":
            task, size, index, method = payload
            self.status.setText(f"Running {task} {format_size(size)} item {index + 1} ({method})…")
            return
        self._results.append(payload)
        self.progress.setValue(min(self._total, len(self._results)))
        self._add_item_row(payload)
        if self._plan is not None:
            self._show_rows(summarise(self._results, self._plan))

    def _on_finished(self, outcome: Any) -> None:
        self._future_done()
        if isinstance(outcome, BaseException):
            self.status.setText(f"The evaluation could not run: {outcome}")
            self._update_buttons()
            return
        self.outcome = outcome
        self._show_rows(outcome.rows)
        assert self.out_dir is not None
        try:
            report.write_outputs(outcome, self.meta, self.out_dir)
            where = f" Report: {self.out_dir / 'report.html'}"
        except OSError as exc:
            where = f" The report could not be written to {self.out_dir}: {exc.strerror or exc}"
        done = sum(r.counted for r in outcome.results)
        head = (f"Stopped early ({outcome.stopped}): {done} of {outcome.planned_items} runs finished."
                if outcome.stopped else f"Finished: {done} runs.")
        notes = "".join(f" Note: {n}." for n in outcome.notes)
        self.status.setText(head + notes + self._skipped_note + where)
        self._update_buttons()
        self.evaluation_finished.emit(outcome)

    def _future_done(self) -> None:
        self._evaluation = None

    def _show_rows(self, rows: list[Any]) -> None:
        self._rows = rows
        t = self.rows_table
        t.setRowCount(len(rows))
        for i, r in enumerate(rows):
            ran = bool(r.items)
            est = "~" if r.tokens_estimated else ""
            cells = (r.task, format_size(r.size), r.method, str(r.items),
                     "-" if r.accuracy is None else f"{r.accuracy:.3f}", report.cost_text(r),
                     f"{est}{r.input_tokens:,}" if ran else "-", f"{est}{r.output_tokens:,}" if ran else "-",
                     f"{r.seconds:.1f}" if ran else "-", str(r.failures), r.note or "")
            for j, text in enumerate(cells):
                t.setItem(i, j, QTableWidgetItem(text))
        self._draw_charts()

    def _add_item_row(self, r: ItemResult) -> None:
        t = self.items_table
        i = t.rowCount()
        t.insertRow(i)
        cells = (r.task, format_size(r.size), str(r.index + 1), r.method, r.status,
                 "" if not r.counted else f"{r.score:.2f}", " ".join((r.answer or r.reason or "").split())[:200],
                 Path(r.trace).name if r.trace else "")
        for j, text in enumerate(cells):
            item = QTableWidgetItem(text)
            if j == len(cells) - 1 and r.trace:
                item.setData(Qt.ItemDataRole.UserRole, r.trace)
                item.setToolTip(r.trace)
            t.setItem(i, j, item)

    def _draw_charts(self) -> None:
        rows = getattr(self, "_rows", [])
        task = self.chart_task.currentText()
        mine = [r for r in rows if r.task == task]
        per_item = [report.per_item_cost(r) for r in mine]
        self.accuracy_chart.load(QByteArray(report.chart(
            f"{task}: accuracy", mine, "accuracy", y_label="accuracy (0–1)", y_max=1.0).encode()))
        self.cost_chart.load(QByteArray(report.chart(
            f"{task}: cost per run (USD)", per_item, "cost_usd", y_label="USD per item",
            fmt="{:.4f}", empty=report.cost_chart_empty(mine)).encode()))

    def trace_of_row(self, row: int) -> Path | None:
        item = self.items_table.item(row, len(ITEM_COLUMNS) - 1)
        path = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        return Path(path) if path else None

    def _on_item_double_clicked(self, row: int, _column: int) -> None:
        path = self.trace_of_row(row)
        if path is None:
            return
        if self.open_trace is not None:
            self.open_trace(path)
        else:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def open_report(self) -> None:
        if self.out_dir is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.out_dir / "report.html")))

    def closeEvent(self, event: Any) -> None:
        if self.running:
            self.stop("the Evaluate window was closed")
        if self._own_engine:
            self.engine.shutdown()
        super().closeEvent(event)


def _table(columns: tuple[str, ...]) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(list(columns))
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.verticalHeader().setVisible(False)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(True)
    return t
