"""Query pane: the question, root and sub model pickers, the run's limits, and Run/Stop."""

from __future__ import annotations

from dataclasses import dataclass, replace

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from rlm_desktop.core.config import RunLimits
from rlm_desktop.core.pricing import unpriced_models
from rlm_desktop.core.profiles import ProviderProfile
from rlm_desktop.engine.prompts import MAX_NOTE_CHARS, PromptError, clean_note
from rlm_desktop.ui.icons import icon


@dataclass(frozen=True, slots=True)
class ModelChoice:
    profile_id: str
    model: str


class ModelPicker(QWidget):
    """A provider combo plus an editable model combo."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.provider = QComboBox()
        self.provider.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.provider.setMinimumContentsLength(14)
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.setMinimumContentsLength(12)
        self._profiles: list[ProviderProfile] = []
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.provider, 3)
        lay.addWidget(self.model, 2)
        self.provider.currentIndexChanged.connect(self._on_provider)
        self.model.currentTextChanged.connect(lambda _t: self.changed.emit())

    def set_profiles(self, profiles: list[ProviderProfile], choice: ModelChoice, *, sub: bool) -> None:
        self._profiles = list(profiles)
        self._sub = sub
        self.provider.blockSignals(True)
        self.provider.clear()
        for p in self._profiles:
            label = p.name if p.is_demo else p.label
            self.provider.addItem(label, p.id)
            if p.is_demo:
                self.provider.setItemData(self.provider.count() - 1,
                                          "No model: deterministic, extractive answers; for seeing "
                                          "the machine work without a key", Qt.ItemDataRole.ToolTipRole)
        idx = max(0, self.provider.findData(choice.profile_id))
        self.provider.setCurrentIndex(idx)
        self.provider.blockSignals(False)
        self._fill_models(choice.model)

    def _on_provider(self, _i: int) -> None:
        self._fill_models(None)
        self.changed.emit()

    def _fill_models(self, preferred: str | None) -> None:
        prof = self.profile()
        self.model.blockSignals(True)
        self.model.clear()
        if prof is not None:
            self.model.addItems(prof.all_models())
            default = prof.sub_model or prof.root_model if self._sub else prof.root_model
            want = preferred or default
            if want:
                i = self.model.findText(want)
                if i < 0:
                    self.model.addItem(want)
                    i = self.model.count() - 1
                self.model.setCurrentIndex(i)
            # The demo's models are fixed: its picker shows only the (labelled) provider.
            self.model.setVisible(not prof.is_demo)
        self.model.blockSignals(False)

    def profile(self) -> ProviderProfile | None:
        pid = self.provider.currentData()
        return next((p for p in self._profiles if p.id == pid), None)

    def choice(self) -> ModelChoice:
        return ModelChoice(str(self.provider.currentData() or ""), self.model.currentText().strip())


class NoteDialog(QDialog):
    """The session's note about the documents: a short text the system prompt carries. Read-only
    once the session has begun (every turn reuses its system prompt byte for byte)."""

    def __init__(self, note: str, *, locked: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("noteDialog")
        self.setWindowTitle("Note about the documents")
        self.editor = QPlainTextEdit(note)
        self.editor.setObjectName("noteEditor")
        self.editor.setPlaceholderText('e.g. "incident tickets from 2025; severity is in column 1"')
        self.editor.setTabChangesFocus(True)
        self.editor.setAccessibleName("Note about the documents")
        self.editor.setReadOnly(locked)
        intro = QLabel("This session's note is part of its system prompt and cannot change now: New "
                       "session (Ctrl+N) starts one with another note." if locked else
                       "Tell the model what these documents are and where things are. It goes into "
                       "the system prompt of this session (every turn), as the last paragraph.")
        intro.setWordWrap(True)
        self.count = QLabel()
        self.count.setObjectName("noteCount")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close if locked else
                                        QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.editor.textChanged.connect(self._update_count)
        lay = QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addWidget(self.editor, 1)
        lay.addWidget(self.count)
        lay.addWidget(self.buttons)
        self.resize(460, 220)
        self._update_count()

    def _update_count(self) -> None:
        n = len(self.editor.toPlainText().strip())
        ok = n <= MAX_NOTE_CHARS
        self.count.setText(f"{n:,} of {MAX_NOTE_CHARS:,} characters" + ("" if ok else " — too long"))
        self.count.setStyleSheet("" if ok else "color: #c62828;")
        button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        if button is not None:
            button.setEnabled(ok)

    def accept(self) -> None:
        """Closes only with a note short enough (the count says why not)."""
        try:
            clean_note(self.editor.toPlainText())
        except PromptError as exc:
            self.count.setText(str(exc))
            self.count.setStyleSheet("color: #c62828;")
            return
        super().accept()


class QueryPane(QWidget):
    """``run_requested`` when Run is pressed, ``stop_requested`` when Stop is."""

    run_requested = Signal()
    stop_requested = Signal()
    settings_requested = Signal()
    new_session_requested = Signal()
    note_changed = Signal(str)

    QUESTION_PLACEHOLDER = "Ask a question about the documents… (Ctrl+Enter runs)"
    FOLLOW_UP_PLACEHOLDER = "Ask a follow-up… (Ctrl+Enter asks it in this session: same REPL and variables)"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("queryPane")
        self._running = False
        self._stopping = False

        self.question = QPlainTextEdit()
        self.question.setObjectName("question")
        self.question.setPlaceholderText(self.QUESTION_PLACEHOLDER)
        self.question.setTabChangesFocus(True)
        self.question.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.question.setMinimumHeight(60)
        self.question.setAccessibleName("Question")

        self.root_picker = ModelPicker()
        self.sub_picker = ModelPicker()
        self.root_picker.setToolTip("The root model writes code; it never sees the documents directly")
        self.sub_picker.setToolTip("The sub model answers llm_query calls on pieces of the documents")
        self.hint = QLabel()
        self.hint.setObjectName("providerHint")
        self.hint.setWordWrap(True)
        self.hint.setTextFormat(Qt.TextFormat.RichText)
        self.hint.linkActivated.connect(lambda _l: self.settings_requested.emit())
        self.hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)

        models = QFormLayout()
        models.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        models.addRow("&Root model:", self.root_picker)
        models.addRow("&Sub model:", self.sub_picker)
        for lbl, w in ((models.labelForField(self.root_picker), self.root_picker.provider),
                       (models.labelForField(self.sub_picker), self.sub_picker.provider)):
            if isinstance(lbl, QLabel):
                lbl.setBuddy(w)

        self.max_iterations = self._spin(1, 1000, "Root iterations (model call + its code)")
        self.max_depth = self._spin(0, 10, "Nested rlm_query levels allowed (0: none)")
        self.max_sub_calls = self._spin(0, 1_000_000, "llm_query + batch items + rlm_query, all depths")
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0.0, 10_000.0)
        self.budget.setDecimals(2)
        self.budget.setPrefix("$")
        self.budget.setSingleStep(0.5)
        self.budget.setSpecialValueText("no limit")
        self.budget.setToolTip("USD budget for the whole run (0 = no limit). Runs with unknown prices "
                               "stop on tokens instead.")
        self.max_tokens = self._spin(0, 2_000_000_000, "Input + output tokens of every model call "
                                     "together (0 = no limit). Bounds spend even when a price is unknown.")
        self.max_tokens.setSpecialValueText("no limit")
        self.max_tokens.setSingleStep(10_000)
        self.max_tokens.setGroupSeparatorShown(True)
        self.cell_timeout = self._spin(1, 86_400, "Wall-clock seconds per code cell", suffix=" s")
        self.run_timeout = self._spin(1, 7 * 86_400, "Wall-clock seconds for the whole run", suffix=" s")
        # The limits fold away to one line (a 1280×720 screen needs the room for the documents).
        limits = QGroupBox()
        limits.setObjectName("limitsBox")
        self.limits_box = limits
        self.limits_toggle = QToolButton()
        self.limits_toggle.setObjectName("limitsToggle")
        self.limits_toggle.setText("&Limits")
        self.limits_toggle.setCheckable(True)
        self.limits_toggle.setChecked(True)
        self.limits_toggle.setAutoRaise(True)
        self.limits_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.limits_toggle.setArrowType(Qt.ArrowType.DownArrow)
        self.limits_toggle.setToolTip("Show or hide this run's limits")
        self.limits_toggle.toggled.connect(self.set_limits_expanded)
        self.limits_summary = QLabel()
        self.limits_summary.setObjectName("limitsSummary")
        self.limits_summary.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        # Never widens the pane: a long summary is cut at the pane's edge (the tooltip has it all).
        self.limits_summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        limits_head = QHBoxLayout()
        limits_head.setContentsMargins(0, 0, 0, 0)
        limits_head.addWidget(self.limits_toggle)
        limits_head.addWidget(self.limits_summary, 1)
        grid = QGridLayout(limits)
        grid.setContentsMargins(6, 4, 6, 4)
        cells = (("Iterations", self.max_iterations), ("Depth", self.max_depth),
                 ("Sub-calls", self.max_sub_calls), ("Cell timeout", self.cell_timeout),
                 ("Budget", self.budget), ("Tokens", self.max_tokens), ("Run timeout", self.run_timeout))
        for i, (text, w) in enumerate(cells):
            lbl = QLabel(text + ":")
            lbl.setBuddy(w)
            grid.addWidget(lbl, i // 4 * 2, i % 4)
            grid.addWidget(w, i // 4 * 2 + 1, i % 4)
        self.price_note = QLabel()
        self.price_note.setObjectName("priceNote")
        self.price_note.setWordWrap(True)
        self.price_note.setVisible(False)
        for sig in (self.root_picker.changed, self.sub_picker.changed, self.budget.valueChanged,
                    self.max_tokens.valueChanged):
            sig.connect(lambda *_: self._update_price_note())
        for w in (self.max_iterations, self.max_depth, self.max_sub_calls, self.max_tokens,
                  self.cell_timeout, self.run_timeout):
            w.valueChanged.connect(lambda *_: self._update_limits_summary())
        self.budget.valueChanged.connect(lambda *_: self._update_limits_summary())

        self.run_button = QPushButton()
        self.run_button.setObjectName("runButton")
        self.run_button.setDefault(False)
        self.run_button.setMinimumHeight(30)
        self.run_button.clicked.connect(self._on_button)
        self.new_session_button = QPushButton(icon("clear"), "&New session")
        self.new_session_button.setObjectName("newSessionButton")
        self.new_session_button.setToolTip("Start clean: the next question gets an empty REPL and no "
                                           "earlier turns (Ctrl+N)")
        self.new_session_button.clicked.connect(self.new_session_requested)
        self._note = ""
        self._note_locked = False
        self.note_dialog: NoteDialog | None = None
        self.note_button = QPushButton("N&ote…")
        self.note_button.setObjectName("noteButton")
        self.note_button.clicked.connect(self.edit_note)
        self.session_label = QLabel()
        self.session_label.setObjectName("sessionLabel")
        self.session_label.setWordWrap(True)
        self.session_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self._base_limits = RunLimits()
        self._update_button()
        self.set_session(None)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        qlabel = QLabel("&Question:")
        qlabel.setBuddy(self.question)
        qrow = QHBoxLayout()
        qrow.addWidget(qlabel)
        qrow.addWidget(self.session_label, 1)
        lay.addLayout(qrow)
        lay.addWidget(self.question, 1)
        lay.addLayout(models)
        lay.addWidget(self.hint)
        lay.addLayout(limits_head)
        lay.addWidget(limits)
        lay.addWidget(self.price_note)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.note_button)
        buttons.addWidget(self.new_session_button)
        lay.addLayout(buttons)
        self._update_note_button()

    @staticmethod
    def _spin(lo: int, hi: int, tip: str, suffix: str = "") -> QSpinBox:
        s = QSpinBox()
        s.setRange(lo, hi)
        s.setToolTip(tip)
        s.setSuffix(suffix)
        return s

    # -- API ---------------------------------------------------------------------------------------
    @property
    def limits_expanded(self) -> bool:
        return self.limits_toggle.isChecked()

    def set_limits_expanded(self, on: bool) -> None:
        """Show the limits' fields, or fold them to the one-line summary."""
        if self.limits_toggle.isChecked() != on:
            self.limits_toggle.setChecked(on)      # comes back here through toggled
            return
        self.limits_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.limits_box.setVisible(on)
        self._update_limits_summary()
        self.updateGeometry()

    def _update_limits_summary(self) -> None:
        budget = self.budget.value()
        tokens = self.max_tokens.value()
        parts = [f"{self.max_iterations.value()} iterations", f"depth {self.max_depth.value()}",
                 f"{self.max_sub_calls.value():,} sub-calls",
                 f"${budget:.2f}" if budget > 0 else "no USD budget",
                 f"{tokens:,} tokens" if tokens else "no token limit",
                 f"cell {self.cell_timeout.value()} s", f"run {self.run_timeout.value()} s"]
        text = " · ".join(parts)
        self.limits_summary.setText("" if self.limits_expanded else text)
        self.limits_summary.setToolTip(text)
        self.limits_toggle.setToolTip(f"Show or hide this run's limits ({text})")

    def set_providers(self, profiles: list[ProviderProfile], root: ModelChoice, sub: ModelChoice) -> None:
        self.root_picker.set_profiles(profiles, root, sub=False)
        self.sub_picker.set_profiles(profiles, sub, sub=True)
        self._update_price_note()
        only_demo = all(p.is_demo for p in profiles)
        if only_demo:
            self.hint.setText("Using the <b>offline demo</b> (no model, extractive answers). "
                              "<a href='settings'>Add a provider…</a> (Ctrl+,) to use a real model.")
        else:
            self.hint.setText("")
        self.hint.setVisible(only_demo)

    def set_limits(self, limits: RunLimits) -> None:
        self._base_limits = limits
        self.max_iterations.setValue(limits.max_iterations)
        self.max_depth.setValue(limits.max_depth)
        self.max_sub_calls.setValue(limits.max_sub_calls)
        self.budget.setValue(limits.budget_usd or 0.0)
        self.max_tokens.setValue(min(limits.max_tokens or 0, self.max_tokens.maximum()))
        self.cell_timeout.setValue(int(round(limits.cell_timeout_s)))
        self.run_timeout.setValue(int(round(limits.run_timeout_s)))
        self._update_limits_summary()

    def limits(self) -> RunLimits:
        """The limits as edited (other fields kept from the defaults); raises ConfigError."""
        budget = self.budget.value()
        return replace(self._base_limits, max_iterations=self.max_iterations.value(),
                       max_depth=self.max_depth.value(), max_sub_calls=self.max_sub_calls.value(),
                       budget_usd=budget if budget > 0 else None,
                       max_tokens=self.max_tokens.value() or None,
                       cell_timeout_s=float(self.cell_timeout.value()),
                       run_timeout_s=float(self.run_timeout.value()))

    def _update_price_note(self) -> None:
        """Say, before the run, when the USD budget cannot bound what the chosen models spend."""
        choices = []
        for picker in (self.root_picker, self.sub_picker):
            prof = picker.profile()
            if prof is not None and not prof.is_demo:
                choices.append((prof.prices, picker.model.currentText().strip()))
        unknown = unpriced_models(choices)
        text = ""
        if unknown and self.budget.value() > 0:
            names = " and ".join(unknown)
            its = "its" if len(unknown) == 1 else "their"
            it = "it" if len(unknown) == 1 else "them"
            text = (f"⚠ No price is set for {names}: {its} cost will show as unknown and the "
                    f"${self.budget.value():.2f} budget cannot stop {it}. ")
            text += (f"The {self.max_tokens.value():,}-token limit still applies."
                     if self.max_tokens.value() else
                     "Set a token limit, or add the price in Settings.")
        self.price_note.setText(text)
        self.price_note.setVisible(bool(text))
        self.updateGeometry()         # the splitter must make room for it (see minimumSizeHint)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        # A word-wrapped label's height at the pane's real width is not part of the layout's
        # minimum, so a splitter would squeeze the limits to fit the note: count it here.
        hint = super().minimumSizeHint()
        if not self.price_note.isHidden():
            width = max(self.width(), 300) - 8
            extra = self.price_note.heightForWidth(width) - self.price_note.minimumSizeHint().height()
            hint.setHeight(hint.height() + max(0, extra))
        return hint

    def query(self) -> str:
        return self.question.toPlainText().strip()

    # -- the session's note ------------------------------------------------------------------------
    def note(self) -> str:
        """The note for a new session ("" for none)."""
        return self._note

    def set_note(self, text: str) -> None:
        """Set the note (raises PromptError when too long)."""
        self._note = clean_note(text) or ""
        self._update_note_button()
        self.note_changed.emit(self._note)

    def edit_note(self) -> NoteDialog:
        """Open the note's editor (window-modal, it does not block a run's events)."""
        dlg = NoteDialog(self._note, locked=self._note_locked or self._running, parent=self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def done(result: int) -> None:
            self.note_dialog = None
            if result == QDialog.DialogCode.Accepted and not dlg.editor.isReadOnly():
                self.set_note(dlg.editor.toPlainText())     # accept() checked its length
        dlg.finished.connect(done)
        self.note_dialog = dlg
        dlg.open()
        return dlg

    def _update_note_button(self) -> None:
        self.note_button.setText("N&ote ✓" if self._note else "N&ote…")
        locked = " (kept by this session: New session to change it)" if self._note_locked else ""
        self.note_button.setToolTip(
            (f"Note for the model about these documents{locked}:\n{self._note}") if self._note else
            "Add a short note about the documents for the model (goes into the system prompt)" +
            (" — this session started without one" if self._note_locked else ""))

    def set_query(self, text: str) -> None:
        self.question.setPlainText(text)

    def set_session(self, name: str | None, *, follow_up: bool = False, turns: int = 0) -> None:
        """Say which session the next question goes to; ``follow_up``: it continues one (the box
        asks for a follow-up)."""
        self.question.setPlaceholderText(self.FOLLOW_UP_PLACEHOLDER if follow_up else self.QUESTION_PLACEHOLDER)
        self._note_locked = follow_up         # the session's system prompt (with its note) is fixed
        self._update_note_button()
        if name is None:
            self.session_label.setText("new session")
            self.session_label.setToolTip("The next question starts a new session (an empty REPL)")
        else:
            done = f" · {turns} turn{'s' if turns != 1 else ''}" if turns else ""
            self.session_label.setText(f"session {name}{done}")
            self.session_label.setToolTip("Follow-ups share this session's REPL and variables; New "
                                          "session (Ctrl+N) starts clean")

    @property
    def follow_up(self) -> bool:
        return self.question.placeholderText() == self.FOLLOW_UP_PLACEHOLDER

    def root_choice(self) -> ModelChoice:
        return self.root_picker.choice()

    def sub_choice(self) -> ModelChoice:
        return self.sub_picker.choice()

    @property
    def running(self) -> bool:
        return self._running

    def set_running(self, running: bool) -> None:
        self._running = running
        self._stopping = False
        for w in (self.note_button, self.root_picker, self.sub_picker, self.max_iterations, self.max_depth,
                  self.max_sub_calls, self.budget, self.max_tokens, self.cell_timeout, self.run_timeout):
            w.setEnabled(not running)
        self.question.setReadOnly(running)
        self._update_button()

    def set_stopping(self) -> None:
        self._stopping = True
        self._update_button()

    def _update_button(self) -> None:
        if self._running:
            self.run_button.setIcon(icon("stop"))
            self.run_button.setText("Stopping…" if self._stopping else "&Stop  (Esc)")
            self.run_button.setEnabled(not self._stopping)
            self.run_button.setToolTip("Cancel every model call, kill the REPL, save the trace")
        else:
            self.run_button.setIcon(icon("run"))
            self.run_button.setText("&Run  (Ctrl+Enter)")
            self.run_button.setEnabled(True)
            self.run_button.setToolTip("Run the question over the loaded documents")

    def _on_button(self) -> None:
        if self._running:
            self.stop_requested.emit()
        else:
            self.run_requested.emit()
