"""The Settings dialog: provider profiles (presets, models, prices, keys in the OS keyring), default
run limits, sandbox limits, memo cache and the weak-sandbox permission, with inline validation."""

from __future__ import annotations

import asyncio
from dataclasses import fields, replace
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from rlm_desktop.core.config import ConfigError, ModelPrice, RunLimits, SandboxLimits
from rlm_desktop.core.profiles import (
    DEMO_ID,
    PRESETS,
    ProfileError,
    ProviderProfile,
    env_var_for,
    profile_from_preset,
    validate_profile,
)
from rlm_desktop.core.profiles import prices_note as prices_note_text
from rlm_desktop.session import secrets
from rlm_desktop.ui.aio import AsyncJob
from rlm_desktop.ui.jobs import ThreadJob
from rlm_desktop.ui.settings import Settings, SettingsError

UNKNOWN = "unknown"
PRICE_COLUMNS = ("Model", "Input $/M", "Cached $/M", "Output $/M", "Context")

# field name -> (label, minimum, maximum, optional ("no limit" at the minimum), suffix, tooltip)
LIMIT_SPECS: dict[str, tuple[str, float, float, bool, str, str]] = {
    "max_iterations": ("Max iterations", 1, 10_000, False, "", "Root model turns before the run stops"),
    "max_depth": ("Max depth", 0, 10, False, "", "Nesting of rlm_query (0 = no nested runs)"),
    "max_sub_calls": ("Max sub-calls", 0, 1_000_000, False, "", "llm_query/rlm_query calls in total"),
    "budget_usd": ("Budget", 0, 100_000, True, " USD", "Total spend; the run stops when reached"),
    "max_tokens": ("Max tokens", 0, 1_000_000_000, True, "", "Input + output tokens, all calls"),
    "cell_timeout_s": ("Cell timeout", 0.1, 86_400, False, " s", "Wall clock per code cell"),
    "call_timeout_s": ("Call timeout", 0.1, 86_400, False, " s", "One model request"),
    "run_timeout_s": ("Run timeout", 1, 604_800, False, " s", "Wall clock for the whole run"),
    "max_output_chars": ("Cell output shown to the model", 100, 10_000_000, False, " chars", ""),
    "batch_concurrency": ("Batch concurrency", 1, 256, False, "", "Parallel llm_query_batched calls"),
    "max_history_chars": ("History size before shortening", 1000, 100_000_000, False, " chars", ""),
    "max_response_chars": ("Longest model reply", 1000, 1_000_000_000, False, " chars",
                           "One model reply longer than this is stopped as a runaway"),
}
SANDBOX_SPECS: dict[str, tuple[str, float, float, bool, str, str]] = {
    "memory_mb": ("Memory", 64, 1_048_576, False, " MB", "Address space of the REPL process"),
    "cpu_s": ("CPU time", 1, 604_800, False, " s", "CPU seconds over the REPL process's life"),
    "scratch_mb": ("Scratch space", 1, 1_048_576, False, " MB", "Private writable scratch"),
    "max_file_mb": ("Largest file", 1, 1_048_576, False, " MB", "Largest file the code may write"),
    "max_open_files": ("Open files", 16, 65_536, False, "", ""),
    "max_processes": ("Processes/threads", 1, 4096, False, "", ""),
    "output_cap_bytes": ("Output kept per cell", 1000, 1_000_000_000, False, " bytes", ""),
}
WEAK_WARNING = ("Warning: with this on, model-written code also runs when the sandbox can only offer "
                "weak isolation (for example without namespaces or Landlock). That code could then read "
                "your files or use the network. Leave it off unless you trust the models and documents.")


def _spin(spec: tuple[str, float, float, bool, str, str], is_int: bool) -> QAbstractSpinBox:
    label, lo, hi, optional, suffix, tip = spec
    w: QSpinBox | QDoubleSpinBox
    if is_int:
        w = QSpinBox()
        w.setRange(int(lo), int(hi))
        w.setGroupSeparatorShown(True)
    else:
        w = QDoubleSpinBox()
        w.setDecimals(2)
        w.setRange(lo, hi)
    if optional:
        w.setMinimum(0)
        w.setSpecialValueText("no limit")
    w.setSuffix(suffix)
    w.setToolTip(tip)
    w.setAccessibleName(label)
    return w


class _DataclassForm(QWidget):
    """Spin boxes for the numeric fields of a limits dataclass (plus checkboxes for bools)."""

    def __init__(self, cls: type, specs: dict[str, tuple[str, float, float, bool, str, str]],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cls = cls
        self.specs = specs
        self.widgets: dict[str, Any] = {}
        form = QFormLayout(self)
        for f in fields(cls):
            spec = specs.get(f.name)
            if spec is None:
                continue
            w = _spin(spec, str(f.type).startswith("int"))
            self.widgets[f.name] = w
            form.addRow(spec[0] + ":", w)
        self.error = QLabel()
        self.error.setStyleSheet("color: #c62828;")
        self.error.setWordWrap(True)
        self.error.hide()
        form.addRow(self.error)

    def set_value(self, value: Any) -> None:
        for name, w in self.widgets.items():
            v = getattr(value, name)
            w.setValue(0 if v is None else v)

    def value(self, base: Any) -> Any:
        """A new dataclass from the widgets (other fields from ``base``); raises ConfigError."""
        changes: dict[str, Any] = {}
        for name, w in self.widgets.items():
            v = w.value()
            changes[name] = None if self.specs[name][3] and v == 0 else v
        try:
            out = replace(base, **changes)
        except ConfigError as exc:
            self.error.setText(str(exc))
            self.error.show()
            raise
        self.error.hide()
        return out


class SettingsDialog(QDialog):
    """Edits a :class:`Settings`. Profiles are written on OK/Apply; keys go to the keyring at once
    (never to the preferences file)."""

    settings_changed = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        self.profiles: list[ProviderProfile] = [p for p in settings.providers() if not p.is_demo]
        self._original_ids: list[str | None] = [p.id for p in self.profiles]
        self.added_ids: list[str] = []        # providers added in this dialog and saved (in order)
        self._current = -1          # index into self.profiles; -1 = the demo row
        self._loading = False
        self._jobs: list[AsyncJob] = []       # probes whose result the GUI thread has not handled yet
        self._key_jobs: list[ThreadJob] = []  # keyring calls still running or not yet shown
        self._key_seq = 0
        self.errors: dict[str, QLabel] = {}

        tabs = QTabWidget()
        tabs.addTab(self._build_providers_tab(), "&Providers")
        tabs.addTab(self._build_limits_tab(), "Run &limits")
        tabs.addTab(self._build_sandbox_tab(), "&Sandbox")
        tabs.addTab(self._build_prompt_tab(), "Pr&ompt")
        self.tabs = tabs

        self.button_box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                           | QDialogButtonBox.StandardButton.Cancel
                                           | QDialogButtonBox.StandardButton.Apply)
        self.button_box.accepted.connect(self.accept)
        self.button_box.rejected.connect(self.reject)
        self.button_box.button(QDialogButtonBox.StandardButton.Apply).clicked.connect(self.apply)
        self.apply_error = QLabel()
        self.apply_error.setStyleSheet("color: #c62828;")
        self.apply_error.setWordWrap(True)
        self.apply_error.hide()

        lay = QVBoxLayout(self)
        for n in settings.notices:
            note = QLabel(n)
            note.setWordWrap(True)
            lay.addWidget(note)
        lay.addWidget(tabs, 1)
        lay.addWidget(self.apply_error)
        lay.addWidget(self.button_box)

        self._load_general()
        self._refresh_list(select=0 if not self.profiles else 1)
        screen = self.screen()
        self.fit_to(screen.availableGeometry().size() if screen is not None else QSize(1280, 800))

    def fit_to(self, available: QSize) -> None:
        """Its preferred 940×720, shrunk to a screen's available area with room for the title bar
        (on a 1280×720 laptop the OK button must stay on the screen; the form scrolls instead)."""
        self.resize(min(940, int(available.width() * 0.95)), min(720, int(available.height() * 0.9)))

    # -- construction -----------------------------------------------------------------------------
    def _err_label(self, name: str) -> QLabel:
        lbl = QLabel()
        lbl.setStyleSheet("color: #c62828;")
        lbl.setWordWrap(True)
        lbl.hide()
        self.errors[name] = lbl
        return lbl

    def _with_error(self, w: QWidget, name: str) -> QWidget:
        """``w`` with its inline error message under it (takes no space while empty)."""
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(w)
        lay.addWidget(self._err_label(name))
        return box

    def _build_providers_tab(self) -> QWidget:
        page = QWidget()
        outer = QVBoxLayout(page)
        self.first_run_hint = QLabel("Only the <b>offline demo</b> is configured: it shows the whole "
                                     "machine working without a model. Add a provider from a preset "
                                     "(OpenAI, OpenRouter, Ollama, …) to use real models.")
        self.first_run_hint.setWordWrap(True)
        outer.addWidget(self.first_run_hint)
        row = QHBoxLayout()
        outer.addLayout(row, 1)

        left = QVBoxLayout()
        self.provider_list = QListWidget()
        self.provider_list.setAccessibleName("Providers")
        self.provider_list.currentRowChanged.connect(self._on_row_changed)
        left.addWidget(self.provider_list, 1)
        add_row = QHBoxLayout()
        self.preset_add_combo = QComboBox()
        for key, p in PRESETS.items():
            self.preset_add_combo.addItem(p.name, key)
        self.add_button = QPushButton("&Add")
        self.add_button.setToolTip("Add a provider from the chosen preset")
        self.add_button.clicked.connect(lambda: self.add_from_preset(self.preset_add_combo.currentData()))
        add_row.addWidget(self.preset_add_combo, 1)
        add_row.addWidget(self.add_button)
        left.addLayout(add_row)
        btns = QHBoxLayout()
        self.duplicate_button = QPushButton("D&uplicate")
        self.duplicate_button.clicked.connect(self.duplicate_current)
        self.remove_button = QPushButton("&Remove")
        self.remove_button.clicked.connect(self.remove_current)
        btns.addWidget(self.duplicate_button)
        btns.addWidget(self.remove_button)
        left.addLayout(btns)
        left_box = QWidget()
        left_box.setLayout(left)
        left.setContentsMargins(0, 0, 0, 0)
        left_box.setMaximumWidth(280)
        row.addWidget(left_box, 1)

        self.form_box = QGroupBox("Provider")
        form = QFormLayout(self.form_box)
        self.id_edit = QLineEdit()
        self.id_edit.setToolTip("Short id: lower-case letters, digits, '-', '_'. It names the key in the "
                                "keyring and the CLI's --provider.")
        self.name_edit = QLineEdit()
        self.preset_combo = QComboBox()
        for key, p in PRESETS.items():
            self.preset_combo.addItem(p.name, key)
        self.base_url_edit = QLineEdit()
        self.base_url_edit.setPlaceholderText("https://server.example.com/v1")
        self.needs_key_check = QCheckBox("The server needs an API key (none is sent otherwise)")
        self.root_model_combo = QComboBox()
        self.root_model_combo.setEditable(True)
        self.sub_model_combo = QComboBox()
        self.sub_model_combo.setEditable(True)
        self.models_edit = QPlainTextEdit()
        self.models_edit.setPlaceholderText("one model name per line (or Fetch models)")
        self.models_edit.setMaximumHeight(90)
        self.concurrency_spin = QSpinBox()
        self.concurrency_spin.setRange(1, 256)
        self.timeout_spin = QDoubleSpinBox()
        self.timeout_spin.setRange(1, 3600)
        self.timeout_spin.setDecimals(1)
        self.timeout_spin.setSuffix(" s")
        for name, w, label in (("id", self.id_edit, "&Id"), ("name", self.name_edit, "&Name"),
                               ("preset", self.preset_combo, "Pr&eset"),
                               ("base_url", self.base_url_edit, "&Base URL"),
                               ("needs_key", self.needs_key_check, ""),
                               ("root_model", self.root_model_combo, "Root &model"),
                               ("sub_model", self.sub_model_combo, "S&ub-call model"),
                               ("models", self.models_edit, "Models"),
                               ("concurrency", self.concurrency_spin, "&Concurrency"),
                               ("request_timeout_s", self.timeout_spin, "Request &timeout")):
            form.addRow(label + (":" if label else ""), self._with_error(w, name))

        key_row = QHBoxLayout()
        self.key_label = QLabel()
        self.key_label.setWordWrap(True)
        self.key_edit = QLineEdit()
        self.key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_edit.setPlaceholderText("paste a new key to replace the stored one")
        self.key_edit.setAccessibleName("New API key")
        self.save_key_button = QPushButton("Save key")
        self.save_key_button.setToolTip("Store the key in the system keyring")
        self.save_key_button.clicked.connect(self.save_key)
        self.session_key_button = QPushButton("Use for this session")
        self.session_key_button.setToolTip("Keep the key in memory only, until the app closes")
        self.session_key_button.clicked.connect(self.use_session_key)
        self.delete_key_button = QPushButton("Delete key")
        self.delete_key_button.clicked.connect(self.delete_key)
        key_row.addWidget(self.key_edit, 1)
        key_row.addWidget(self.save_key_button)
        key_row.addWidget(self.session_key_button)
        key_row.addWidget(self.delete_key_button)
        form.addRow("API key:", self.key_label)
        key_box = QWidget()
        key_box.setLayout(key_row)
        key_row.setContentsMargins(0, 0, 0, 0)
        form.addRow("", self._with_error(key_box, "key"))

        conn_row = QHBoxLayout()
        self.fetch_button = QPushButton("&Fetch models")
        self.fetch_button.clicked.connect(self.fetch_models)
        self.test_button = QPushButton("Test co&nnection")
        self.test_button.setToolTip("Reach the server and prove the key: where the model list answers "
                                    "without a key, a 1-token test reply from the root model is asked "
                                    "for (a wrong key then shows as 'Key rejected').")
        self.test_button.clicked.connect(self.test_connection)
        conn_row.addWidget(self.fetch_button)
        conn_row.addWidget(self.test_button)
        conn_row.addStretch(1)
        form.addRow("", conn_row)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("", self.status_label)

        self.price_table = QTableWidget(0, len(PRICE_COLUMNS))
        self.price_table.setHorizontalHeaderLabels(PRICE_COLUMNS)
        header = self.price_table.horizontalHeader()
        for c in range(1, len(PRICE_COLUMNS)):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.price_table.verticalHeader().hide()
        for c, tip in enumerate(("", "Input, USD per million tokens", "Cached input, USD per million "
                                 "tokens (empty: billed as input)", "Output, USD per million tokens",
                                 "Context window in tokens")):
            if tip:
                self.price_table.horizontalHeaderItem(c).setToolTip(tip)
        self.price_table.setMinimumHeight(170)
        self.price_table.setToolTip("USD per million tokens. Leave a price empty when it is unknown: the "
                                    "cost is then shown as unknown, never as 0.")
        price_btns = QHBoxLayout()
        self.add_price_button = QPushButton("Add row")
        self.add_price_button.clicked.connect(lambda: self._add_price_row("", None, None))
        self.remove_price_button = QPushButton("Remove row")
        self.remove_price_button.clicked.connect(self._remove_price_row)
        price_btns.addWidget(self.add_price_button)
        price_btns.addWidget(self.remove_price_button)
        price_btns.addStretch(1)
        prices_note = QLabel(prices_note_text())
        prices_note.setWordWrap(True)
        prices_note.setStyleSheet("color: palette(mid);")
        price_box = QWidget()
        pl = QVBoxLayout(price_box)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.price_table)
        pl.addLayout(price_btns)
        pl.addWidget(prices_note)
        pl.addWidget(self._err_label("prices"))
        pl.addWidget(self._err_label("context_windows"))
        form.addRow("Prices:", price_box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form_box)
        row.addWidget(scroll, 3)

        for w in (self.id_edit, self.name_edit, self.base_url_edit):
            w.textChanged.connect(self._on_edited)
        self.preset_combo.currentIndexChanged.connect(self._on_edited)
        self.needs_key_check.toggled.connect(self._on_edited)
        self.root_model_combo.currentTextChanged.connect(self._on_edited)
        self.sub_model_combo.currentTextChanged.connect(self._on_edited)
        self.models_edit.textChanged.connect(self._on_edited)
        self.concurrency_spin.valueChanged.connect(self._on_edited)
        self.timeout_spin.valueChanged.connect(self._on_edited)
        self.price_table.itemChanged.connect(self._on_edited)
        return page

    def _build_limits_tab(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.addWidget(QLabel("Defaults for new runs (each run can change them in the query pane)."))
        self.limits_form = _DataclassForm(RunLimits, LIMIT_SPECS)
        lay.addWidget(self.limits_form)
        self.memo_check = QCheckBox("Reuse answers of identical sub-calls within a run (memo cache)")
        lay.addWidget(self.memo_check)
        lay.addStretch(1)
        return page

    def _build_sandbox_tab(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.addWidget(QLabel("Limits of the separate process that runs model-written code."))
        self.sandbox_form = _DataclassForm(SandboxLimits, SANDBOX_SPECS)
        lay.addWidget(self.sandbox_form)
        self.allow_weak_check = QCheckBox("Allow runs when only a weak sandbox is available")
        self.weak_warning = QLabel(WEAK_WARNING)
        self.weak_warning.setWordWrap(True)
        self.weak_warning.setStyleSheet("color: #b26a00;")
        self.allow_weak_check.toggled.connect(self._on_weak_toggled)
        lay.addWidget(self.allow_weak_check)
        lay.addWidget(self.weak_warning)
        self.follow_links_check = QCheckBox("Follow links that lead out of a chosen folder")
        self.follow_links_check.setToolTip(
            "Off: a link in a folder you add whose target is elsewhere (e.g. ~/.ssh/id_rsa) is listed "
            "and not loaded, so it is never sent to the model. Files you add directly are always read. "
            "Applies to documents added from now on.")
        lay.addWidget(self.follow_links_check)
        lay.addStretch(1)
        return page

    def _build_prompt_tab(self) -> QWidget:
        from rlm_desktop.engine.prompts import CONTEXT_PLACEHOLDER, NOTE_PLACEHOLDER

        page = QWidget()
        lay = QVBoxLayout(page)
        intro = QLabel(
            "A system prompt for the root model that replaces the built-in one (empty: the built-in "
            f"prompt). {CONTEXT_PLACEHOLDER} is replaced by the description of the loaded documents "
            f"(sizes, kinds) and {NOTE_PLACEHOLDER} by the session's note; whichever is not in the "
            "text is added at its end. The prompt sent is recorded in the trace (the first model "
            "call of each run). Applies to new sessions.")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setObjectName("customSystemPrompt")
        self.prompt_edit.setAccessibleName("Custom system prompt")
        self.prompt_edit.setPlaceholderText("(the built-in system prompt)")
        self.prompt_edit.textChanged.connect(self._update_prompt_warning)
        lay.addWidget(self.prompt_edit, 1)
        self.prompt_warning = QLabel()
        self.prompt_warning.setObjectName("promptWarning")
        self.prompt_warning.setWordWrap(True)
        self.prompt_warning.setStyleSheet("color: #b26a00;")
        self.prompt_warning.hide()
        lay.addWidget(self.prompt_warning)
        return page

    def _update_prompt_warning(self) -> None:
        from rlm_desktop.engine.prompts import missing_contract

        text = self.prompt_edit.toPlainText()
        missing = missing_contract(text) if text.strip() else []
        self.prompt_warning.setText("It does not mention " + ", ".join(missing) + ": without them the "
                                    "model may not know how to use the REPL (you are asked before a "
                                    "run)." if missing else "")
        self.prompt_warning.setVisible(bool(missing))

    # -- general ----------------------------------------------------------------------------------
    def _load_general(self) -> None:
        self.prompt_edit.setPlainText(self.settings.custom_system_prompt())
        self.limits_form.set_value(self.settings.default_limits())
        sb = self.settings.sandbox_limits()
        self.sandbox_form.set_value(sb)
        self.allow_weak_check.setChecked(sb.allow_weak)
        self._on_weak_toggled(sb.allow_weak)
        self.memo_check.setChecked(self.settings.memo_cache())
        self.follow_links_check.setChecked(self.settings.follow_outside_links())

    def _on_weak_toggled(self, on: bool) -> None:
        self.weak_warning.setVisible(bool(on))

    # -- provider list ----------------------------------------------------------------------------
    def _refresh_list(self, select: int | None = None) -> None:
        """Rebuild the list; ``select``: the row to show (default: keep the current profile)."""
        self.provider_list.blockSignals(True)
        self.provider_list.clear()
        demo = QListWidgetItem("Offline demo (no model)")
        demo.setToolTip("Always available; cannot be edited or removed.")
        self.provider_list.addItem(demo)
        others = [p.id for p in self.profiles]
        for i, p in enumerate(self.profiles):
            item = QListWidgetItem(p.label)
            bad = validate_profile(p, [DEMO_ID] + others[:i] + others[i + 1:])
            if bad:
                item.setForeground(QColor("#c62828"))
                item.setToolTip("; ".join(str(e) for e in bad))
            self.provider_list.addItem(item)
        row = self._current + 1 if select is None else select
        row = min(max(row, 0), self.provider_list.count() - 1)
        self.provider_list.setCurrentRow(row)
        self.provider_list.blockSignals(False)
        self.first_run_hint.setVisible(not self.profiles)
        if select is not None or row - 1 != self._current:
            self._current = row - 1
            self._load_profile()

    def current_profile(self) -> ProviderProfile | None:
        return self.profiles[self._current] if 0 <= self._current < len(self.profiles) else None

    def _on_row_changed(self, row: int) -> None:
        self._current = row - 1
        self._load_profile()

    def select_profile(self, profile_id: str) -> None:
        rows = [i + 1 for i, p in enumerate(self.profiles) if p.id == profile_id]
        self._refresh_list(select=rows[0] if rows else 0)

    def _unique_id(self, base: str) -> str:
        ids = {p.id for p in self.profiles} | {DEMO_ID}
        cand, n = base, 2
        while cand in ids:
            cand = f"{base}-{n}"
            n += 1
        return cand

    def add_from_preset(self, preset: str) -> ProviderProfile:
        """Add a new profile from ``preset`` and select it."""
        base = {"custom": "custom", "lmstudio": "lmstudio"}.get(preset, preset)
        prof = profile_from_preset(preset, self._unique_id(base))
        self.profiles.append(prof)
        self._original_ids.append(None)
        self._refresh_list(select=len(self.profiles))
        return prof

    def duplicate_current(self) -> None:
        prof = self.current_profile()
        if prof is None:
            return
        copy = replace(prof, id=self._unique_id(prof.id + "-copy"), name=f"{prof.name} (copy)")
        self.profiles.append(copy)
        self._original_ids.append(None)
        self._refresh_list(select=len(self.profiles))

    def remove_current(self) -> None:
        if self._current < 0:
            return
        row = self._current + 1
        del self.profiles[self._current]
        del self._original_ids[self._current]
        self._current = -1
        self._refresh_list(select=min(row, len(self.profiles)))

    # -- profile form -----------------------------------------------------------------------------
    def _load_profile(self) -> None:
        prof = self.current_profile()
        self._loading = True
        try:
            editable = prof is not None
            for w in (self.id_edit, self.name_edit, self.preset_combo, self.base_url_edit,
                      self.needs_key_check, self.root_model_combo, self.sub_model_combo, self.models_edit,
                      self.concurrency_spin, self.timeout_spin, self.price_table, self.add_price_button,
                      self.remove_price_button, self.duplicate_button, self.remove_button,
                      self.fetch_button, self.test_button):
                w.setEnabled(editable)
            shown = prof if prof is not None else next(p for p in self.settings.providers() if p.is_demo)
            self.form_box.setTitle("Offline demo (read-only)" if prof is None else "Provider")
            self.id_edit.setText(shown.id)
            self.name_edit.setText(shown.name)
            idx = self.preset_combo.findData(shown.preset)
            self.preset_combo.setCurrentIndex(idx)
            self.base_url_edit.setText(shown.base_url)
            self.needs_key_check.setChecked(shown.needs_key)
            models = shown.all_models()
            for combo, value in ((self.root_model_combo, shown.root_model),
                                 (self.sub_model_combo, shown.sub_model)):
                combo.clear()
                combo.addItems(models)
                combo.setEditText(value)
            self.models_edit.setPlainText("\n".join(shown.models))
            self.concurrency_spin.setValue(shown.concurrency)
            self.timeout_spin.setValue(shown.request_timeout_s)
            self.price_table.setRowCount(0)
            rows = shown.price_rows()   # list prices (genai-prices) with the user's own over them
            for m in dict.fromkeys([*rows, *shown.context_windows]):
                self._add_price_row(m, rows.get(m), shown.context_windows.get(m))
            self.status_label.clear()
            self.key_edit.clear()
        finally:
            self._loading = False
        self._show_errors(validate_profile(prof, self._other_ids()) if prof is not None else [])
        self._refresh_key_status()

    def _add_price_row(self, model: str, price: ModelPrice | None, window: int | None) -> None:
        self._loading, was = True, self._loading
        try:
            r = self.price_table.rowCount()
            self.price_table.insertRow(r)
            vals = [model,
                    None if price is None else price.input,
                    None if price is None else price.cached_input,
                    None if price is None else price.output,
                    window]
            for c, v in enumerate(vals):
                if c == 0:
                    item = QTableWidgetItem(str(v))
                else:
                    item = QTableWidgetItem(UNKNOWN if v is None else f"{v:g}")
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    if v is None:
                        item.setForeground(QColor("#888888"))
                self.price_table.setItem(r, c, item)
        finally:
            self._loading = was
        if not was:
            self._on_edited()

    def _remove_price_row(self) -> None:
        r = self.price_table.currentRow()
        if r >= 0:
            self.price_table.removeRow(r)
            self._on_edited()

    def _other_ids(self) -> list[str]:
        return [DEMO_ID] + [p.id for i, p in enumerate(self.profiles) if i != self._current]

    def _table_values(self) -> tuple[dict[str, ModelPrice], dict[str, int], list[ProfileError]]:
        prices: dict[str, ModelPrice] = {}
        windows: dict[str, int] = {}
        errs: list[ProfileError] = []
        for r in range(self.price_table.rowCount()):
            cells = [(self.price_table.item(r, c).text().strip() if self.price_table.item(r, c) else "")
                     for c in range(len(PRICE_COLUMNS))]
            model = cells[0]
            nums: list[float | None] = []
            for c, text in enumerate(cells[1:], start=1):
                if text.lower() in ("", UNKNOWN):
                    nums.append(None)
                    continue
                try:
                    nums.append(float(text.replace(",", "").replace("$", "")))
                except ValueError:
                    errs.append(ProfileError(f"{PRICE_COLUMNS[c]} of {model or 'row ' + str(r + 1)!r} is "
                                             f"not a number ({text!r}); leave it empty for unknown",
                                             "prices"))
                    nums.append(None)
            if not model:
                if any(v is not None for v in nums):
                    errs.append(ProfileError(f"row {r + 1} of the price table has no model name", "prices"))
                continue
            inp, cached, out, window = nums
            if inp is not None and out is not None:
                prices[model] = ModelPrice(input=inp, output=out, cached_input=cached)
            elif inp is not None or out is not None or cached is not None:
                errs.append(ProfileError(f"give both the input and the output price of {model!r}, or leave "
                                         "them empty (unknown)", "prices"))
            if window is not None:
                if window != int(window) or window <= 0:
                    errs.append(ProfileError(f"the context window of {model!r} must be a whole number of "
                                             "tokens", "context_windows"))
                else:
                    windows[model] = int(window)
        return prices, windows, errs

    def _form_profile(self) -> tuple[ProviderProfile | None, list[ProfileError]]:
        prof = self.current_profile()
        if prof is None:
            return None, []
        prices, windows, errs = self._table_values()
        models = tuple(dict.fromkeys(m.strip() for m in self.models_edit.toPlainText().splitlines()
                                     if m.strip()))
        new = replace(prof, id=self.id_edit.text().strip(), name=self.name_edit.text().strip(),
                      preset=str(self.preset_combo.currentData() or "custom"),
                      base_url=self.base_url_edit.text().strip(),
                      needs_key=self.needs_key_check.isChecked(),
                      root_model=self.root_model_combo.currentText().strip(),
                      sub_model=self.sub_model_combo.currentText().strip(),
                      models=models, prices=prices, context_windows=windows,
                      concurrency=self.concurrency_spin.value(),
                      request_timeout_s=float(self.timeout_spin.value()))
        return new, errs + validate_profile(new, self._other_ids())

    def _on_edited(self, *_args: Any) -> None:
        if self._loading:
            return
        new, errs = self._form_profile()
        if new is None:
            return
        old = self.profiles[self._current]
        self.profiles[self._current] = new
        if (old.id, old.needs_key) != (new.id, new.needs_key):
            self._refresh_key_status()
        self._show_errors(errs)
        item = self.provider_list.item(self._current + 1)
        if item is not None:
            item.setText(new.label)
            item.setForeground(QColor("#c62828") if errs else self.palette().text().color())
            item.setToolTip("; ".join(str(e) for e in errs))

    def _show_errors(self, errs: list[ProfileError]) -> None:
        by_field: dict[str, list[str]] = {}
        for e in errs:
            by_field.setdefault(e.field or "id", []).append(str(e))
        for name, lbl in self.errors.items():
            if name == "key":
                continue
            msgs = by_field.get(name)
            lbl.setText("; ".join(msgs) if msgs else "")
            lbl.setVisible(bool(msgs))

    def field_error(self, name: str) -> str:
        """The inline message shown under a field ('' when none)."""
        lbl = self.errors.get(name)
        return lbl.text() if lbl is not None and lbl.isVisibleTo(self) else ""

    # -- keys -------------------------------------------------------------------------------------
    def _key_job(self, fn: Any, done: Any) -> ThreadJob:
        """Run a keyring call on a worker thread (a locked keyring may wait for a password prompt);
        ``done(result, error_message)`` runs on the GUI thread."""
        job = ThreadJob(lambda _job: fn(), name="keyring", parent=self)
        self._key_jobs.append(job)

        def finish(res: Any, err: str | None) -> None:
            if job in self._key_jobs:
                self._key_jobs.remove(job)
            done(res, err)

        job.finished.connect(lambda res: finish(res, None))
        job.failed.connect(lambda msg: finish(None, msg))
        job.start()
        return job

    def _set_key_widgets(self, on: bool) -> None:
        for w in (self.key_edit, self.save_key_button, self.session_key_button, self.delete_key_button):
            w.setEnabled(on)

    def _refresh_key_status(self) -> None:
        prof = self.current_profile()
        self._key_seq += 1
        seq = self._key_seq
        if prof is None or not prof.needs_key:
            self._set_key_widgets(False)
            self.key_label.setText("No key is needed or sent.")
            return
        self.key_label.setText("Checking the keyring…")

        def look() -> tuple[Any, Any]:
            return secrets.keyring_status(), secrets.resolve_key(prof)

        def show(res: Any, err: str | None) -> None:
            cur = self.current_profile()
            if seq != self._key_seq or cur is None or cur.id != prof.id:
                return    # a newer look-up (or another profile) took over
            if res is None:
                self.key_label.setText(f"The keyring could not be read: {err}")
                self._set_key_widgets(True)
                return
            status, r = res
            text = f"{secrets.mask(r.key)} — {secrets.describe_source(r)}" if r.found else "No key stored yet."
            envs = " or ".join(secrets.env_vars_for(prof))
            if not status.available:
                text += (f"<br><b>No system keyring:</b> keys cannot be saved here. Use a key for this "
                         f"session only, or set {envs} before starting the app.")
            else:
                text += f" (the environment variable {envs} takes precedence when set)"
            self.key_label.setText(text)
            self._set_key_widgets(True)
            self.save_key_button.setEnabled(status.available)
            self.delete_key_button.setEnabled(status.available or secrets.get_session_key(prof.id) is not None)

        self._key_job(look, show)

    def _key_error(self, text: str) -> None:
        lbl = self.errors["key"]
        lbl.setText(text)
        lbl.setVisible(bool(text))

    def _key_target(self) -> ProviderProfile | None:
        prof = self.current_profile()
        if prof is None:
            return None
        errs = [e for e in validate_profile(prof, self._other_ids()) if e.field == "id"]
        if errs:
            self._key_error(f"fix the id first: {errs[0]}")
            return None
        return prof

    def _after_key_change(self, _res: Any, err: str | None) -> None:
        if err:
            self._key_error(err)
        else:
            self.key_edit.clear()
            self._key_error("")
            # What a fetch/test said about the old key ("No key for provider…", "Bad key") is no
            # longer true: the next Test connection speaks for the new one.
            self.status_label.setText("Key changed: Test connection checks it.")
        self._refresh_key_status()

    def save_key(self) -> None:
        """Store the typed key in the keyring under the profile id (never in the preferences)."""
        prof = self._key_target()
        if prof is None:
            return
        key = self.key_edit.text()
        self._set_key_widgets(False)

        def store() -> None:
            secrets.set_key(prof.id, key)
            secrets.clear_session_key(prof.id)

        self._key_job(store, self._after_key_change)

    def use_session_key(self) -> None:
        prof = self._key_target()
        if prof is None:
            return
        try:
            secrets.set_session_key(prof.id, self.key_edit.text())
        except secrets.SecretsError as exc:
            self._key_error(str(exc))
            return
        self._after_key_change(None, None)

    def delete_key(self) -> None:
        prof = self._key_target()
        if prof is None:
            return
        self._set_key_widgets(False)

        def remove() -> None:
            try:
                secrets.delete_key(prof.id)
            except secrets.NoKeyringError:
                secrets.clear_session_key(prof.id)

        self._key_job(remove, self._after_key_change)

    # -- fetch / test (a qasync task on the GUI loop; the GUI thread never waits) -------------------
    def _start_probe(self, which: str) -> AsyncJob | None:
        prof, errs = self._form_profile()
        if prof is None:
            return None
        url_errs = [e for e in errs if e.field == "base_url"]
        if url_errs:
            self.status_label.setText(str(url_errs[0]))
            return None
        typed = self.key_edit.text().strip()

        async def work() -> Any:
            from rlm_desktop.engine import connection

            # The keyring may block (D-Bus, an unlock prompt): it gets a worker thread.
            key = typed or (await asyncio.get_running_loop().run_in_executor(
                None, lambda: secrets.resolve_key(prof).key))
            fn = connection.fetch_models if which == "models" else connection.test_connection
            return await fn(prof, key)

        self.fetch_button.setEnabled(False)
        self.test_button.setEnabled(False)
        self.status_label.setText("Fetching models…" if which == "models" else "Testing the connection…")
        job = AsyncJob(work, name=f"provider-{which}", parent=self)
        job.finished.connect(lambda res: self._on_probe_done(job, which, prof.id, res))
        job.failed.connect(lambda msg: self._on_probe_done(job, which, prof.id, None, msg))
        self._jobs.append(job)
        job.start()
        return job

    def fetch_models(self) -> AsyncJob | None:
        return self._start_probe("models")

    def test_connection(self) -> AsyncJob | None:
        return self._start_probe("test")

    def _on_probe_done(self, job: AsyncJob, which: str, profile_id: str, res: Any,
                       failure: str = "") -> None:
        if job in self._jobs:
            self._jobs.remove(job)
        self.fetch_button.setEnabled(self.current_profile() is not None)
        self.test_button.setEnabled(self.current_profile() is not None)
        prof = self.current_profile()
        if prof is None or prof.id != profile_id:
            return   # the user moved on; a late answer is not applied to another profile
        if res is None:
            self.status_label.setText(f"Failed: {failure}")
            return
        mark = "✔ " if res.ok else "✖ "
        self.status_label.setText(mark + res.message)
        if which == "models" and res.ok and res.models:
            known = list(prof.models)
            merged = known + [m for m in res.models if m not in known]
            self.models_edit.setPlainText("\n".join(merged))
            have = {self.price_table.item(r, 0).text() for r in range(self.price_table.rowCount())
                    if self.price_table.item(r, 0)}
            for m, p in prof.with_changes(models=tuple(res.models)).price_rows().items():
                if m not in have:
                    self._add_price_row(m, p, None)
            for combo in (self.root_model_combo, self.sub_model_combo):
                text = combo.currentText()
                self._loading = True
                combo.clear()
                combo.addItems(merged)
                combo.setEditText(text or (merged[0] if merged else ""))
                self._loading = False
            self._on_edited()

    def busy(self) -> bool:
        """True while a fetch/test or keyring result is still to be shown."""
        return bool(self._jobs or self._key_jobs)

    # -- apply ------------------------------------------------------------------------------------
    def validation_errors(self) -> list[str]:
        out: list[str] = []
        ids = [p.id for p in self.profiles]
        for i, p in enumerate(self.profiles):
            for e in validate_profile(p, [DEMO_ID] + ids[:i] + ids[i + 1:]):
                out.append(f"{p.label}: {e}")
        if self._current >= 0:
            _new, errs = self._form_profile()
            out += [f"{self.current_profile().label}: {e}" for e in errs if e.field in ("prices",
                                                                                         "context_windows")]
        return out

    def apply(self) -> bool:
        """Validate everything and write it. False (with messages shown) when something is invalid."""
        errors = self.validation_errors()
        try:
            limits = self.limits_form.value(self.settings.default_limits())
        except ConfigError as exc:
            errors.append(f"Run limits: {exc}")
            limits = None
        try:
            sb = self.sandbox_form.value(self.settings.sandbox_limits())
            sb = replace(sb, allow_weak=self.allow_weak_check.isChecked())
        except ConfigError as exc:
            errors.append(f"Sandbox limits: {exc}")
            sb = None
        if errors or limits is None or sb is None:
            self.apply_error.setText("Not saved: " + " · ".join(dict.fromkeys(errors)))
            self.apply_error.show()
            return False
        try:
            self._write_profiles()
            self.settings.set_default_limits(limits)
            self.settings.set_sandbox_limits(sb)
            self.settings.set_memo_cache(self.memo_check.isChecked())
            self.settings.set_follow_outside_links(self.follow_links_check.isChecked())
            self.settings.set_custom_system_prompt(self.prompt_edit.toPlainText())
        except (SettingsError, ProfileError, secrets.SecretsError) as exc:
            self.apply_error.setText(f"Not saved: {exc}")
            self.apply_error.show()
            return False
        self.apply_error.hide()
        self.settings_changed.emit()
        return True

    def _write_profiles(self) -> None:
        s = self.settings
        keep = {p.id for p in self.profiles}
        renamed = {old: p.id for old, p in zip(self._original_ids, self.profiles, strict=True)
                   if old is not None and old != p.id}
        for p in s.providers():
            if not p.is_demo and p.id not in keep and p.id not in renamed:
                s.remove_profile(p.id)
                try:
                    secrets.delete_key(p.id)
                except secrets.NoKeyringError:
                    secrets.clear_session_key(p.id)
        for old, new_id in renamed.items():
            self._move_key(old, new_id)
        stored = {p.id for p in s.providers()}
        for old, p in zip(self._original_ids, self.profiles, strict=True):
            s.save_profile(p, replace_id=old if old is not None and old in stored else None)
        # Providers added here, for the offer to use them (a rename after Apply follows along).
        added = [renamed.get(i, i) for i in self.added_ids if i in keep or i in renamed]
        added += [p.id for old, p in zip(self._original_ids, self.profiles, strict=True) if old is None]
        self.added_ids = list(dict.fromkeys(added))
        self._original_ids = [p.id for p in self.profiles]
        self._refresh_list()

    @staticmethod
    def _move_key(old: str, new: str) -> None:
        """Keys follow a renamed profile (keyring entries are keyed by the id)."""
        try:
            key = secrets.get_key(old)
        except secrets.NoKeyringError:
            key = None     # no keyring: nothing was stored under the old id
        except secrets.SecretsError as exc:
            raise SettingsError(f"the provider {old!r} was not renamed to {new!r}: its key could not be "
                                f"read from the keyring ({exc})") from None
        if key:
            try:
                secrets.set_key(new, key)
                secrets.delete_key(old)
            except secrets.SecretsError as exc:
                raise SettingsError(f"the provider {old!r} was not renamed to {new!r}: its key could not "
                                    f"be moved in the keyring ({exc})") from None
        sess = secrets.get_session_key(old)
        if sess:
            secrets.set_session_key(new, sess)
            secrets.clear_session_key(old)

    def added_profiles(self) -> list[ProviderProfile]:
        """The providers added in this dialog and saved (the newest last)."""
        by_id = {p.id: p for p in self.profiles}
        return [by_id[i] for i in self.added_ids if i in by_id]

    def accept(self) -> None:
        if self.apply():
            super().accept()

    def env_hint(self) -> str:
        prof = self.current_profile()
        return env_var_for(prof.id) if prof is not None else ""
