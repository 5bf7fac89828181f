"""Documents pane: add files and folders (loaded off the GUI thread), the list with per-file status,
a text preview and totals. Its DocumentSet becomes the run's ``context``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QFont, QPalette, QTextCharFormat, QTextCursor, QTextFormat
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from rlm_desktop.core.documents import (
    Document,
    DocumentSet,
    LoadCancelled,
    ScanResult,
    display_name,
    format_size,
    load_documents,
    scan_paths,
    supported_suffixes,
)
from rlm_desktop.core.sources import SourceRange, merge_ranges
from rlm_desktop.ui.icons import icon
from rlm_desktop.ui.jobs import ThreadJob
from rlm_desktop.ui.sources_view import ranges_text

AnyIndex = QModelIndex | QPersistentModelIndex


def file_dialog_filter() -> str:
    """The Add-documents dialog's filters: every extension the loader reads, then all files."""
    patterns = " ".join(f"*{suffix}" for suffix in supported_suffixes())
    return f"Documents ({patterns});;All files (*)"

COLUMNS = ("Name", "Folder", "Type", "Size", "Chars", "≈ Tokens*", "Status", "Read")
COL_NAME, COL_FOLDER, COL_TYPE, COL_SIZE, COL_CHARS, COL_TOKENS, COL_STATUS, COL_SEEN = range(len(COLUMNS))
COLUMN_TIPS = (
    "The file's name (its path relative to the folder it came from is the key in `context`)",
    "The folder the file is in, relative to the folder it came from (two files of the same name "
    "in different folders differ here)",
    "How the file was read",
    "Size on disk",
    "Characters of extracted text",
    "* Estimated tokens (characters / 4) — an estimate, not a tokenizer count",
    "Loaded, loaded with a warning, or why the file could not be used",
    "Whether the models of this session read this document, and in which turns (bold: the shown turn "
    "read it; the lines each turn saw are in the tooltip)",
)
SEEN_TEXT = "read"
# What marks a line in the preview (mark_kinds): the cited range, the shown turn's reads, other turns'.
CITED, SEEN_SHOWN, SEEN_SESSION = "cited", "seen in the shown turn", "seen in the session"
PREVIEW_LIMIT = 200_000
# Ask before loading more than this many files or bytes at once.
CONFIRM_FILES = 2_000
CONFIRM_BYTES = 200 * 1024 * 1024


class DocumentsModel(QAbstractTableModel):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.docs: list[Document] = []
        # rel_path -> the merged line ranges the session's models saw, all turns (set_seen).
        self.seen: dict[str, list[tuple[int, int]]] = {}
        # rel_path -> turn -> what that turn's models saw; the turn shown; how many turns there are.
        self.seen_turns: dict[str, dict[int, list[SourceRange]]] = {}
        self.shown_turn: int | None = None
        self.turn_count = 0

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.docs)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMN_TIPS[section]
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.docs):
            return None
        d = self.docs[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_NAME:
                return doc_name(d)
            if col == COL_FOLDER:
                return doc_folder(d)
            if col == COL_TYPE:
                return d.kind + (f" ({d.pages} p.)" if d.pages else "")
            if col == COL_SIZE:
                return format_size(d.size_bytes)
            if col == COL_CHARS:
                return f"{d.chars:,}" if d.ok else ""
            if col == COL_TOKENS:
                return f"~{d.est_tokens:,}" if d.ok else ""
            if col == COL_STATUS:
                return status_text(d)
            if col == COL_SEEN:
                return self.seen_text(d.rel_path)
        if role == Qt.ItemDataRole.ToolTipRole and col == COL_SEEN:
            return self.seen_tip(d.rel_path)
        if role == Qt.ItemDataRole.FontRole and col == COL_SEEN and self.read_in_shown_turn(d.rel_path) \
                and self.turn_count > 1:
            f = QFont()
            f.setBold(True)
            return f
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_STATUS:
                return status_text(d, full=True)
            if col in (COL_NAME, COL_FOLDER):
                # The whole relative path (the key in `context`) and where the file is on disk (a
                # name that is not UTF-8 shown with \xNN escapes, not a surrogate).
                where = f"{d.rel_path}\n{display_name(str(d.path))}"
                if d.rel_path in self.seen:
                    where += "\n" + self.seen_tip(d.rel_path)
                return where if d.ok else f"{where}\n{status_text(d, full=True)}"
        if role == Qt.ItemDataRole.ForegroundRole and not d.ok:
            return QBrush(Qt.GlobalColor.red)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_SIZE, COL_CHARS, COL_TOKENS):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.UserRole:
            return d
        return None

    def set_docs(self, docs: list[Document]) -> None:
        self.beginResetModel()
        self.docs = docs
        self.endResetModel()

    def set_seen(self, turns: dict[str, dict[int, list[SourceRange]]], shown_turn: int | None,
                 turn_count: int) -> None:
        """What each turn's models saw, per document (``rel_path`` → turn → ranges)."""
        self.seen_turns = {k: {t: sorted(rs, key=lambda r: (r.start_line, r.end_line)) for t, rs in per.items()}
                           for k, per in turns.items()}
        self.seen = {k: merge_ranges((r.start_line, r.end_line) for rs in per.values() for r in rs)
                     for k, per in turns.items()}
        self.shown_turn, self.turn_count = shown_turn, turn_count
        if self.docs:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.docs) - 1, len(COLUMNS) - 1))

    def read_in_shown_turn(self, rel_path: str) -> bool:
        return self.shown_turn is not None and self.shown_turn in self.seen_turns.get(rel_path, {})

    def seen_text(self, rel_path: str) -> str:
        """The Read column: "read" (one turn in the session), else the turns that read it."""
        turns = sorted(self.seen_turns.get(rel_path, {}))
        if not turns:
            return ""
        if self.turn_count <= 1:
            return SEEN_TEXT
        return f"turn{'s' if len(turns) > 1 else ''} {', '.join(map(str, turns))}"

    def seen_tip(self, rel_path: str) -> str:
        per = self.seen_turns.get(rel_path, {})
        if not per:
            return "not read by the models of this session"
        if self.turn_count <= 1:
            return "seen by models: " + ranges_text([r for rs in per.values() for r in rs])
        turns = sorted(per)
        shown = "" if self.shown_turn is None else (
            f"; the shown turn ({self.shown_turn}) read it" if self.shown_turn in per
            else f"; the shown turn ({self.shown_turn}) did not")
        return (f"read in turn{'s' if len(turns) > 1 else ''} {', '.join(map(str, turns))}{shown}\n"
                + "\n".join(f"turn {t}: seen by models: {ranges_text(per[t])}" for t in turns))


def doc_name(d: Document) -> str:
    """The file's own name (the last part of its relative path; the loader always separates with
    "/", and a backslash may be part of a name: ``report-\\xff.txt`` shows a byte that is not UTF-8)."""
    return d.rel_path.rsplit("/", 1)[-1]


def doc_folder(d: Document) -> str:
    """The folder part of the document's relative path ('' at the top of the folder)."""
    return d.rel_path.rsplit("/", 1)[0] if "/" in d.rel_path else ""


class _FolderElideLeft(QStyledItemDelegate):
    """Folders are cut at the left: the folder nearest the file is what tells two files apart."""

    def initStyleOption(self, option: QStyleOptionViewItem, index: AnyIndex) -> None:  # noqa: N802
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideLeft


def status_text(d: Document, full: bool = False) -> str:
    if d.error:
        return f"error: {d.error}"
    if d.warning:
        return f"loaded, warning: {d.warning}"
    enc = f" ({d.encoding})" if full and d.encoding else ""
    return "loaded" + enc


class DocumentsPane(QWidget):
    """The documents list. ``add_paths`` loads on a worker thread; ``document_set()`` for a run."""

    documents_changed = Signal()
    loading_changed = Signal(bool)
    status_message = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("documentsPane")
        # Replaceable for tests: asks the user; returns True to go on.
        self.confirm: Callable[[str], bool] = self._ask
        self.confirm_files = CONFIRM_FILES
        self.confirm_bytes = CONFIRM_BYTES
        self._job: ThreadJob | None = None
        # Links out of an added folder: reported, not loaded, unless the setting allows them.
        self.follow_outside_links = False
        self.model = DocumentsModel(self)

        # Short words beside the "add" icons: the pane must fit a third of a 1280-pixel screen.
        self.add_files_btn = QPushButton(icon("add-files"), "&Files…")
        self.add_folder_btn = QPushButton(icon("add-folder"), "F&older…")
        self.add_files_btn.setToolTip("Add files (Ctrl+O)")
        self.add_folder_btn.setToolTip("Add a folder of documents (Ctrl+Shift+O)")
        self.remove_btn = QPushButton(icon("remove"), "&Remove")
        self.clear_btn = QPushButton(icon("clear"), "Clear")
        self.remove_btn.setToolTip("Remove the selected documents (Delete)")
        self.clear_btn.setToolTip("Remove every document")
        self.add_files_btn.clicked.connect(self.choose_files)
        self.add_folder_btn.clicked.connect(self.choose_folder)
        self.remove_btn.clicked.connect(self.remove_selected)
        self.clear_btn.clicked.connect(self.clear)
        buttons = QHBoxLayout()
        for b in (self.add_files_btn, self.add_folder_btn, self.remove_btn, self.clear_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)

        self.table = QTableView()
        self.table.setObjectName("documentsTable")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)   # keep the file's extension in view
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self._folder_delegate = _FolderElideLeft(self.table)
        self.table.setItemDelegateForColumn(COL_FOLDER, self._folder_delegate)
        hh = self.table.horizontalHeader()
        hh.setStretchLastSection(False)
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)   # the name takes what is left
        hh.setMinimumSectionSize(36)
        fm = self.table.fontMetrics()
        for col, sample in ((COL_FOLDER, "folder/sub"), (COL_TYPE, "markdown"), (COL_SIZE, "999.9 KB"),
                            (COL_CHARS, "99,999"), (COL_TOKENS, "~99,999"), (COL_STATUS, "loaded"),
                            (COL_SEEN, SEEN_TEXT)):
            hh.resizeSection(col, fm.horizontalAdvance(sample) + 16)
        # On a laptop-width pane the name needs the room: characters are in the totals line, the
        # type is in the name's extension (and the preview's title), and the header's menu (right
        # click) shows any column again.
        hh.hideSection(COL_CHARS)
        hh.hideSection(COL_TYPE)
        hh.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        hh.customContextMenuRequested.connect(self._column_menu)
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.table.setAccessibleName("Documents")

        self.empty_hint = QLabel("Drop files or folders anywhere on the window, or use Add files / "
                                 "Add folder. Text, Markdown, CSV, JSON, HTML, code and PDF.")
        self.empty_hint.setWordWrap(True)
        self.empty_hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.progress.setFormat("Loading %v of %m…")
        self.cancel_btn = QPushButton("Cancel loading")
        self.cancel_btn.setVisible(False)
        self.cancel_btn.clicked.connect(self.cancel_loading)
        prog = QHBoxLayout()
        prog.addWidget(self.progress, 1)
        prog.addWidget(self.cancel_btn)

        self.totals = QLabel()
        self.totals.setObjectName("documentsTotals")
        self.totals.setWordWrap(True)

        self.preview_label = QLabel("Preview")
        self.preview_label.setWordWrap(True)
        self.show_seen = QCheckBox("Show what the &models saw")
        self.show_seen.setObjectName("showSeen")
        self.show_seen.setToolTip("Highlight the lines this session's models saw in this document; the "
                                  "shown turn's reads are darker")
        self.show_seen.toggled.connect(self._mark_preview)
        # The cited range shown (document rel_path, first line, last line), highlighted in the preview.
        self._cited: tuple[str, int, int] | None = None
        self._shown: str | None = None          # rel_path of the previewed document
        self._mark_kinds: dict[int, str] = {}   # preview line -> what marks it (mark_kinds)
        self.preview = QPlainTextEdit()
        self.preview.setObjectName("documentPreview")
        self.preview.setReadOnly(True)
        self.preview.setPlaceholderText("Select a document to preview its extracted text.")
        self.preview.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.preview.setMinimumHeight(3 * self.preview.fontMetrics().lineSpacing())

        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addLayout(buttons)
        tl.addWidget(self.empty_hint)
        tl.addWidget(self.table, 1)
        tl.addLayout(prog)
        tl.addWidget(self.totals)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        ph = QHBoxLayout()
        ph.addWidget(self.preview_label, 1)
        ph.addWidget(self.show_seen)
        bl.addLayout(ph)
        bl.addWidget(self.preview, 1)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("documentsSplitter")
        self.splitter.addWidget(top)
        self.splitter.addWidget(bottom)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.splitter)
        self._refresh()

    # -- API ---------------------------------------------------------------------------------------
    @property
    def documents(self) -> list[Document]:
        return list(self.model.docs)

    @property
    def loading(self) -> bool:
        return self._job is not None

    def document_set(self) -> DocumentSet:
        """The loaded, usable documents (errors listed apart) for a run."""
        ok = [d for d in self.model.docs if d.ok]
        bad = [d for d in self.model.docs if not d.ok]
        return DocumentSet(documents=ok, errors=bad)

    def add_paths(self, paths: Iterable[str | Path]) -> bool:
        """Scan then load ``paths`` on a worker thread. False when a load is already running."""
        plist = [Path(p) for p in paths]
        if not plist:
            return False
        if self._job is not None:
            self.status_message.emit("Still loading documents; wait or cancel before adding more.")
            return False
        follow = self.follow_outside_links
        job = ThreadJob(lambda j: scan_paths(plist, cancel=j.cancel, follow_outside_links=follow),
                        name="scan", parent=self)
        job.finished.connect(self._on_scanned)
        job.failed.connect(self._on_failed)
        self._begin(job, "Scanning…")
        return True

    def cancel_loading(self) -> None:
        if self._job is not None:
            self._job.cancel.cancel("loading cancelled by the user")

    def remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()}, reverse=True)
        if not rows:
            return
        docs = list(self.model.docs)
        for r in rows:
            del docs[r]
        self.model.set_docs(docs)
        self._refresh()
        self.documents_changed.emit()

    def clear(self) -> None:
        self.model.set_docs([])
        self._refresh()
        self.documents_changed.emit()

    def choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add documents", "", file_dialog_filter(),
                                                options=QFileDialog.Option.HideNameFilterDetails)
        if files:
            self.add_paths(files)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of documents")
        if folder:
            self.add_paths([folder])

    def select_row(self, row: int) -> None:
        self.table.selectionModel().select(
            self.model.index(row, 0),
            QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)

    # -- loading -----------------------------------------------------------------------------------
    def _begin(self, job: ThreadJob, text: str) -> None:
        self._job = job
        job.progress.connect(self._on_progress)
        self.progress.setRange(0, 0)
        self.progress.setFormat(text)
        self.progress.setVisible(True)
        self.cancel_btn.setVisible(True)
        self.loading_changed.emit(True)
        job.start()

    def _end(self) -> None:
        self._job = None
        self.progress.setVisible(False)
        self.cancel_btn.setVisible(False)
        self.loading_changed.emit(False)

    def _on_progress(self, done: int, total: int, name: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"Loading %v of %m… {name}")

    def _on_failed(self, message: str) -> None:
        cancelled = self._job is not None and self._job.cancel.cancelled
        self._end()
        if cancelled:
            self.status_message.emit("Loading cancelled; nothing was added.")
        else:
            self.status_message.emit(f"Could not load the documents: {message}")
            QMessageBox.warning(self, "Documents not loaded", f"Could not load the documents: {message}")

    def _on_scanned(self, scan: ScanResult) -> None:
        n, size = len(scan.files), scan.total_bytes
        if n > self.confirm_files or size > self.confirm_bytes:
            text = (f"This adds {n:,} files ({format_size(size)}). Loading may take a while and the "
                    "model will see a large context. Load them?")
            if not self.confirm(text):
                self._end()
                self.status_message.emit("Not loaded: you declined the large folder.")
                return
        self._job = None
        job = ThreadJob(lambda j: load_documents(scan, cancel=j.cancel, progress=j.report),
                        name="load", parent=self)
        job.finished.connect(self._on_loaded)
        job.failed.connect(self._on_failed)
        self._begin(job, f"Loading {n:,} files…")

    def _on_loaded(self, result: DocumentSet) -> None:
        self._end()
        merged = self._merge(result.documents + result.errors)
        self.model.set_docs(merged)
        self._refresh()
        self.documents_changed.emit()
        self.status_message.emit("Added: " + result.summary())

    def _merge(self, new: list[Document]) -> list[Document]:
        by_path = {str(d.path): d for d in self.model.docs}
        taken = {d.rel_path: str(d.path) for d in self.model.docs}
        for d in new:
            key = str(d.path)
            if key in by_path:
                d.rel_path = by_path[key].rel_path
            elif d.rel_path in taken:
                base, n = d.rel_path, 2
                while f"{base} ({n})" in taken:
                    n += 1
                d.rel_path = f"{base} ({n})"
            by_path[key] = d
            taken[d.rel_path] = key
        return sorted(by_path.values(), key=lambda d: d.rel_path)

    def _ask(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Load a large folder?", text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    # -- view --------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        docs = self.model.docs
        self.empty_hint.setVisible(not docs)
        ds = self.document_set()
        if not docs:
            self.totals.setText("No documents yet.")
        else:
            self.totals.setText(ds.summary())
        self.remove_btn.setEnabled(bool(docs))
        self.clear_btn.setEnabled(bool(docs))
        # The folder column is there when there is a folder to tell files apart by.
        self.table.horizontalHeader().setSectionHidden(COL_FOLDER, not any(doc_folder(d) for d in docs))
        self._on_selection()

    def _column_menu(self, pos: QPoint) -> None:
        """The header's menu: show or hide the optional columns."""
        hh = self.table.horizontalHeader()
        menu = QMenu(self)
        for col in (COL_TYPE, COL_SIZE, COL_CHARS, COL_TOKENS):
            act = menu.addAction(COLUMNS[col].rstrip("*"))
            act.setCheckable(True)
            act.setChecked(not hh.isSectionHidden(col))
            act.toggled.connect(lambda on, c=col: hh.setSectionHidden(c, not on))
        menu.popup(hh.mapToGlobal(pos))

    # -- where answers came from --------------------------------------------------------------------
    def set_seen(self, ranges: Iterable[tuple[str, int, int]]) -> None:
        """What one run's models saw: ``(document, first line, last line)`` each (a session of one
        turn; see :meth:`set_session_seen`)."""
        self.set_session_seen([(1, [SourceRange(n, a, b) for n, a, b in ranges])], 1)

    def set_session_seen(self, turns: Sequence[tuple[int, Sequence[SourceRange]]],
                         shown_turn: int | None) -> None:
        """What the session's models saw, per turn: ``(turn number, ranges)`` for each turn of the
        session, and the turn shown. A row of a document they read says which turns read it (bold
        when the shown turn did); the preview can highlight the lines (``show_seen``), the shown
        turn's darker."""
        per: dict[str, dict[int, list[SourceRange]]] = {}
        for turn, ranges in turns:
            for r in ranges:
                doc = self.find(r.document)
                if doc is not None:
                    per.setdefault(doc.rel_path, {}).setdefault(turn, []).append(r)
        self.model.set_seen(per, shown_turn, len(turns))
        self._mark_preview()

    def find(self, name: str) -> Document | None:
        """The loaded document a recorded or cited name means: its relative path, or the one document
        whose path ends with ``/name``."""
        docs = [d for d in self.model.docs if d.ok]
        exact = [d for d in docs if d.rel_path == name]
        if exact:
            return exact[0]
        tail = [d for d in docs if d.rel_path.endswith("/" + name.removeprefix("./"))]
        return tail[0] if len(tail) == 1 else None

    def show_range(self, name: str, start: int | None, end: int | None, page: int | None = None,
                   sheet: str | None = None) -> bool:
        """Select ``name`` and show lines ``start``..``end`` in the preview, scrolled to them and
        highlighted (a page without lines: the page's first line; a spreadsheet's ``sheet`` without
        lines — rows that are not there — its header line). False, with a status message, when the
        document is not here or the lines are not in the preview."""
        doc = self.find(name)
        if doc is None:
            self.status_message.emit(f"{name} is not in the Documents list; add it to see the cited lines.")
            return False
        if start is None and page is not None and doc.page_lines and 1 <= page <= len(doc.page_lines):
            start = end = doc.page_lines[page - 1]
        sheet_only = None
        if start is None and sheet is not None:
            from rlm_desktop.core.sheets import Workbook

            wb = Workbook.from_text(doc.text or "")
            found = wb.find(sheet) if wb is not None else None
            if found is not None:
                start = end = found.header_line
                sheet_only = found.name
        row = self.model.docs.index(doc)
        self._cited = (doc.rel_path, start, end or start) if start is not None else None
        if self._shown != doc.rel_path or not self.table.selectionModel().isRowSelected(row, QModelIndex()):
            self.select_row(row)
        else:
            self._mark_preview()
        self.table.scrollTo(self.model.index(row, 0))
        if start is None:
            self.status_message.emit(f"{name}: the citation names no lines; showing the document.")
            return True
        block = self.preview.document().findBlockByNumber(start - 1)
        if not block.isValid():
            self.status_message.emit(f"{name} L{start} is past what the preview shows.")
            return False
        last = self.preview.document().findBlockByNumber((end or start) - 1)
        if not last.isValid():
            last = self.preview.document().lastBlock()
        # Room to read the range: a preview folded to a few lines grows to half the pane.
        need = min(last.blockNumber() - block.blockNumber() + 4, 12) * self.preview.fontMetrics().lineSpacing()
        sizes = self.splitter.sizes()
        if self.preview.viewport().height() < need and len(sizes) == 2:
            half = sum(sizes) // 2
            self.splitter.setSizes([sum(sizes) - half, half])
        # The cursor at the first cited line (no selection: the marker colour shows the range).
        self.preview.setTextCursor(QTextCursor(block))
        self.preview.centerCursor()
        if sheet_only is not None:
            self.status_message.emit(f"{name}: the cited rows are not in sheet {sheet_only}; showing the "
                                     "sheet's header line.")
        return True

    def _mark_preview(self, *args: Any) -> None:
        """Highlight in the preview the cited range (strong) and, with ``show_seen``, what the
        models saw (light)."""
        marks: list[QTextEdit.ExtraSelection] = []
        self._mark_kinds: dict[int, str] = {}
        pal = self.preview.palette()
        if self._shown is not None and self.show_seen.isChecked():
            light = QColor(pal.color(QPalette.ColorRole.Highlight))
            light.setAlpha(45)
            for a, b in self.model.seen.get(self._shown, []):
                marks += self._line_marks(a, b, light, SEEN_SESSION)
            shown = self.model.seen_turns.get(self._shown, {}).get(self.model.shown_turn or 0, [])
            if shown and self.model.turn_count > 1:     # the shown turn's own reads: darker
                mid = QColor(pal.color(QPalette.ColorRole.Highlight))
                mid.setAlpha(110)
                for a, b in merge_ranges((r.start_line, r.end_line) for r in shown):
                    marks += self._line_marks(a, b, mid, SEEN_SHOWN)
        if self._cited is not None and self._cited[0] == self._shown:
            strong = QColor(255, 214, 10, 150)          # a marker pen: readable on light and dark
            marks += self._line_marks(self._cited[1], self._cited[2], strong, CITED)
        self.preview.setExtraSelections(marks)

    def _line_marks(self, a: int, b: int, colour: QColor, kind: str) -> list[QTextEdit.ExtraSelection]:
        doc = self.preview.document()
        first, last = doc.findBlockByNumber(a - 1), doc.findBlockByNumber(b - 1)
        if not first.isValid():
            return []
        if not last.isValid():
            last = doc.lastBlock()
        fmt = QTextCharFormat()
        fmt.setBackground(colour)
        fmt.setProperty(QTextFormat.Property.FullWidthSelection, True)
        out = []
        block = first
        while block.isValid() and block.blockNumber() <= last.blockNumber():
            self._mark_kinds[block.blockNumber() + 1] = kind
            s = QTextEdit.ExtraSelection()
            s.format = fmt
            s.cursor = QTextCursor(block)
            out.append(s)
            block = block.next()
        return out

    def marked_lines(self) -> list[int]:
        """The preview's highlighted lines (1-based), for tests and accessibility."""
        return sorted({s.cursor.blockNumber() + 1 for s in self.preview.extraSelections()})

    def mark_kinds(self) -> dict[int, str]:
        """Each highlighted line (1-based) and what marks it: CITED, SEEN_SHOWN (the shown turn saw
        it) or SEEN_SESSION (only other turns of the session saw it; with one turn, every seen line)."""
        return dict(self._mark_kinds)

    def _on_selection(self, *args: Any) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            self._shown = None
            self.preview.setPlainText("")
            self.preview_label.setText("Preview")
            self._mark_preview()
            return
        d = self.model.docs[rows[0].row()]
        if self._cited is not None and self._cited[0] != d.rel_path:
            self._cited = None
        if not d.ok:
            self._shown = None
            self.preview_label.setText(f"Preview — {d.rel_path}")
            self.preview.setPlainText(f"Not loaded: {d.error}")
            self._mark_preview()
            return
        text = d.text or ""
        shown = text[:PREVIEW_LIMIT]
        note = (f" (first {PREVIEW_LIMIT:,} of {len(text):,} characters)" if len(text) > PREVIEW_LIMIT
                else f" ({len(text):,} characters)")
        self.preview_label.setText(f"Preview — {d.rel_path}{note}")
        if self._shown != d.rel_path or self.preview.toPlainText() != shown:
            self.preview.setPlainText(shown)
        self._shown = d.rel_path
        self._mark_preview()

    def cancel_and_wait(self, timeout: float = 5.0) -> None:
        job = self._job
        if job is not None:
            job.cancel.cancel("the window is closing")
            job.wait(timeout)

    def __repr__(self) -> str:   # pragma: no cover - debugging aid
        return f"<DocumentsPane {len(self.model.docs)} docs>"


__all__ = ["DocumentsPane", "LoadCancelled"]
