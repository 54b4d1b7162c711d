"""Tools > Batch score folder: ``mammo-score`` from a dialog, while the viewer stays usable.

:class:`BatchRunner` holds the batch's state (counts, rate, ETA, the per-study errors) and runs it
through :class:`viewer.batch_process.BatchProcess` (``engine.batch.run_batch`` in a child process)
from a worker thread; :class:`BatchDialog` shows it and only writes through the runner. The dialog
is not modal: reading goes on while a folder is scored. Closing it hides it (the batch goes on;
Tools > Batch score folder shows it again); Cancel stops the batch within a second, leaving a
results file of complete rows that a later run continues (Existing file: continue it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

import engine
from viewer.batch_process import BatchOutcome, BatchProcess, BatchRequest
from viewer.workers import Worker, WorkerPool

__all__ = [
    "BatchRunner",
    "BatchDialog",
    "format_duration",
    "format_rate",
    "remember_batch_input",
    "batch_input_for",
]

logger = logging.getLogger(__name__)

_HISTORY_KEY = "research/batch_inputs"
_HISTORY_MAX = 30


# --- settings: which folder a results file was scored from -------------------------------------------


def remember_batch_input(settings: QSettings, csv_path: str | Path, input_dir: str | Path) -> None:
    """Record that ``csv_path`` holds the results of ``input_dir`` (the results browser finds the
    studies from it)."""
    key = str(Path(csv_path).resolve())
    raw = settings.value(_HISTORY_KEY) or []
    entries = [raw] if isinstance(raw, str) else [str(e) for e in raw]
    entries = [e for e in entries if e.split("\t", 1)[0] != key]
    entries.insert(0, f"{key}\t{Path(input_dir).resolve()}")
    settings.setValue(_HISTORY_KEY, entries[:_HISTORY_MAX])


def batch_input_for(settings: QSettings | None, csv_path: str | Path) -> Path | None:
    """The input folder recorded for a results file, or None."""
    if settings is None:
        return None
    key = str(Path(csv_path).resolve())
    raw = settings.value(_HISTORY_KEY) or []
    for e in [raw] if isinstance(raw, str) else [str(e) for e in raw]:
        csv_part, _, folder = e.partition("\t")
        if csv_part == key and folder:
            return Path(folder)
    return None


# --- formatting ----------------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """``"45 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``; ``"?"`` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def format_rate(rate: float) -> str:
    """Studies per second, or seconds per study when slower than one every two seconds."""
    if rate <= 0:
        return ""
    if rate >= 0.5:
        return f"{rate:.1f} studies/s"
    return f"{1.0 / rate:.1f} s/study"


# --- the runner ----------------------------------------------------------------------------------------


class BatchRunner(QObject):
    """One batch at a time, in a child process driven by a worker thread.

    Attributes:
        running: A batch is in progress.
        status: One line: what it is doing, or how it ended.
        done, total, skipped, errors: Studies finished in this run, to do, already in the file,
            failed in this run.
        rate: Studies per second; eta: seconds left (None while unknown).
        error_list: ``[(study_id, message)]`` of the studies that failed in this run.
        outcome: The last run's :class:`~viewer.batch_process.BatchOutcome` (None before).
        failure: The message when the batch could not run at all.
        request: The last request.

    Signals:
        changed: Anything above changed.
        error_added(str, str): A study failed (study id, message).
        finished(object): The run ended (its outcome, or None when it could not run).
    """

    changed = Signal()
    error_added = Signal(str, str)
    finished = Signal(object)
    _relayed = Signal(str, object)

    def __init__(self, parent: QObject | None = None, process: BatchProcess | None = None) -> None:
        super().__init__(parent)
        self.pool = WorkerPool(1, self)
        self.process = process or BatchProcess()
        self._worker: Worker | None = None
        self.request: BatchRequest | None = None
        self._reset()
        self._relayed.connect(self._on_relayed)

    def _reset(self) -> None:
        self.running = False
        self.cancelling = False
        self.status = ""
        self.done = self.total = self.skipped = self.errors = 0
        self.rate = 0.0
        self.eta: float | None = None
        self.elapsed = 0.0
        self.error_list: list[tuple[str, str]] = []
        self.outcome: BatchOutcome | None = None
        self.failure: str | None = None
        self.engine_info: dict = {}

    def start(self, request: BatchRequest) -> bool:
        """Start a batch; False when one is already running."""
        if self.running:
            return False
        self._reset()
        self.request = request
        self.running = True
        self.status = "Starting: loading the model\u2026"
        w = Worker(self._run, request, name="batch")
        w.signals.finished.connect(self._on_worker_finished)
        self._worker = w
        self.pool.start(w)
        self.changed.emit()
        return True

    def _run(self, request: BatchRequest, *, cancel, progress) -> None:  # noqa: ANN001 - Worker API
        """Worker thread: run the batch; every outcome goes through :attr:`_relayed`."""
        try:
            out = self.process.run(request, cancel=cancel, progress=progress, report=self._relayed.emit)
        except Exception as exc:  # the worker boundary: the UI shows one line
            self._relayed.emit("error", exc)
        else:
            self._relayed.emit("outcome", out)

    def cancel(self) -> None:
        """Stop the batch (within a second; the results file keeps every finished study)."""
        if self.running and self._worker is not None and not self.cancelling:
            self.cancelling = True
            self._worker.cancel()
            self.status = "Cancelling\u2026"
            self.changed.emit()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel and wait for the worker thread (the window is closing)."""
        self.cancel()
        return self.pool.wait(timeout_ms)

    @property
    def busy(self) -> bool:
        """True while the worker thread runs."""
        return bool(self.pool.active)

    def model_info_text(self) -> str:
        """``"name version on device"`` of the model in use, once loaded."""
        info = self.engine_info
        if not info:
            return ""
        return f"{info.get('model', '')} {info.get('model_version', '')} on {info.get('device', '')}".strip()

    # ------------------------------------------------------------------ GUI thread
    def _on_relayed(self, kind: str, payload: Any) -> None:
        if kind == "status":
            if not self.cancelling:
                self.status = f"Starting: {payload}\u2026"
        elif kind == "engine":
            self.engine_info = dict(payload)
            if not self.cancelling:
                self.status = "Finding studies\u2026"
        elif kind == "progress":
            d = payload
            self.done, self.total, self.skipped, self.errors = d["done"], d["total"], d["skipped"], d["errors"]
            self.rate, self.eta, self.elapsed = float(d["rate"]), d["eta"], float(d["elapsed"])
            if d.get("status") == "error" and d.get("study_id") is not None:
                item = (str(d["study_id"]), str(d.get("message") or ""))
                self.error_list.append(item)
                self.error_added.emit(*item)
            if not self.cancelling:
                self.status = "Scoring\u2026" if self.done < self.total else "Finishing\u2026"
        elif kind == "outcome":
            self.outcome = payload
            self.status = self._ending(payload)
        elif kind == "error":
            self.failure = self._failure_text(payload)
            self.status = self.failure
        self.changed.emit()

    def _ending(self, out: BatchOutcome) -> str:
        name = Path(out.csv).name
        counts = f"{out.scored} scored, {out.errors} error{'s' if out.errors != 1 else ''}"
        if out.skipped:
            counts += f", {out.skipped} already in the file"
        if out.cancelled:
            return f"Cancelled: {counts}. {name} keeps every finished study; start again to continue it."
        if out.found == 0:
            return "No study found in that folder."
        return f"Done: {counts} in {format_duration(out.seconds)} \u2192 {name}"

    @staticmethod
    def _failure_text(exc: BaseException) -> str:
        if isinstance(exc, engine.MammoError):
            return f"The batch could not run: {exc}"
        if isinstance(exc, OSError):
            where = Path(exc.filename).name if getattr(exc, "filename", None) else "the results file"
            return f"The batch stopped: cannot write {where} ({exc.strerror or exc})"
        logger.error("unexpected error in the batch", exc_info=exc)
        return f"The batch stopped: unexpected {type(exc).__name__} (details in the log)"

    def _on_worker_finished(self) -> None:
        self.running = False
        self.cancelling = False
        self._worker = None
        self.changed.emit()
        self.finished.emit(self.outcome)


# --- the dialog ----------------------------------------------------------------------------------------


class BatchDialog(QDialog):
    """Input folder, output file, model, device; progress with ETA, Cancel, per-study errors.

    Args:
        models: Installed model names.
        model: The one chosen first.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        settings: Where the last folders are remembered (the main window's settings).
        parent: The main window.

    Signals:
        study_open_requested(str): Open a study (a failed one, double-clicked in the list).
        results_open_requested(str, str): Open the results file in the results browser (CSV,
            input folder).
    """

    study_open_requested = Signal(str)
    results_open_requested = Signal(str, str)

    def __init__(
        self,
        models: list[str],
        model: str | None = None,
        device: str = "auto",
        settings: QSettings | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Batch score folder")
        self.setModal(False)
        self.settings = settings
        self.runner = BatchRunner(self)
        self.resize(720, 560)

        lay = QVBoxLayout(self)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.input_edit = QLineEdit()
        self.input_edit.setPlaceholderText("folder of studies (every sub-folder with images is a study)")
        self.input_button = QPushButton("Browse\u2026")
        form.addRow("Input folder", self._with_button(self.input_edit, self.input_button))
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("results CSV (one row per study and breast)")
        self.output_button = QPushButton("Browse\u2026")
        form.addRow("Output file", self._with_button(self.output_edit, self.output_button))
        self.existing_row = QWidget()
        ex = QHBoxLayout(self.existing_row)
        ex.setContentsMargins(0, 0, 0, 0)
        self.resume_radio = QRadioButton("Continue it (skip the studies already scored)")
        self.replace_radio = QRadioButton("Replace it")
        self.resume_radio.setChecked(True)
        self._existing_group = QButtonGroup(self)
        self._existing_group.addButton(self.resume_radio)
        self._existing_group.addButton(self.replace_radio)
        ex.addWidget(self.resume_radio)
        ex.addWidget(self.replace_radio)
        ex.addStretch(1)
        form.addRow("File exists", self.existing_row)
        self.model_combo = QComboBox()
        for name in models:
            self.model_combo.addItem(name)
        if model in models:
            self.model_combo.setCurrentText(model)
        form.addRow("Model", self.model_combo)
        self.device_combo = QComboBox()
        for d in ("auto", "cpu", "cuda"):
            self.device_combo.addItem(d)
        self.device_combo.setCurrentText(device if device in ("auto", "cpu", "cuda") else "auto")
        form.addRow("Device", self.device_combo)
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(0, 16)
        self.workers_spin.setValue(1)
        self.workers_spin.setToolTip("Studies decoded in parallel ahead of the model (0: none)")
        form.addRow("Loaders", self.workers_spin)
        lay.addLayout(form)
        self._form = form

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m studies")
        lay.addWidget(self.progress)
        self.detail = QLabel("")
        lay.addWidget(self.detail)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.errors_title = QLabel("Studies that could not be scored")
        lay.addWidget(self.errors_title)
        self.error_tree = QTreeWidget()
        self.error_tree.setColumnCount(2)
        self.error_tree.setHeaderLabels(["Study", "Error"])
        self.error_tree.setRootIsDecorated(False)
        self.error_tree.setAlternatingRowColors(True)
        self.error_tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.error_tree.header().setStretchLastSection(True)
        self.error_tree.setToolTip("Double-click to open the study in the reader")
        lay.addWidget(self.error_tree, 1)

        buttons = QHBoxLayout()
        self.open_results_button = QPushButton("Open in results browser")
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel batch")
        self.close_button = QPushButton("Close")
        buttons.addWidget(self.open_results_button)
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)
        lay.addLayout(buttons)

        self.input_button.clicked.connect(self.choose_input)
        self.output_button.clicked.connect(self.choose_output)
        self.input_edit.textChanged.connect(self._on_input_changed)
        self.output_edit.textChanged.connect(self._on_form_changed)
        self.model_combo.currentIndexChanged.connect(self._on_form_changed)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.close_button.clicked.connect(self.close)
        self.open_results_button.clicked.connect(self._on_open_results)
        self.error_tree.itemDoubleClicked.connect(self._on_error_double_clicked)
        self.runner.changed.connect(self._on_runner_changed)
        self.runner.error_added.connect(self._on_error_added)
        self._auto_output = ""
        self._restore()
        self._on_runner_changed()

    @staticmethod
    def _with_button(edit: QLineEdit, button: QPushButton) -> QWidget:
        w = QWidget()
        h = QHBoxLayout(w)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(edit, 1)
        h.addWidget(button)
        return w

    def set_models(self, models: list[str], model: str | None) -> None:
        """Refresh the model list (not while a batch runs); keeps the current choice if still there."""
        if self.runner.running:
            return
        current = self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for name in models:
            self.model_combo.addItem(name)
        pick = current if current in models else model
        if pick in models:
            self.model_combo.setCurrentText(pick)
        self.model_combo.blockSignals(False)
        self._on_form_changed()

    # ------------------------------------------------------------------ settings
    def _restore(self) -> None:
        st = self.settings
        if st is None:
            return
        last_in = st.value("batch/input")
        if last_in:
            self.input_edit.setText(str(last_in))
        last_out = st.value("batch/output")
        if last_out:
            self.output_edit.setText(str(last_out))
        try:
            self.workers_spin.setValue(int(st.value("batch/workers", 1)))
        except (TypeError, ValueError):
            pass

    def _save(self, request: BatchRequest) -> None:
        st = self.settings
        if st is None:
            return
        st.setValue("batch/input", request.input_dir)
        st.setValue("batch/output", request.output_csv)
        st.setValue("batch/workers", request.workers)
        remember_batch_input(st, request.output_csv, request.input_dir)
        st.sync()

    # ------------------------------------------------------------------ form
    def choose_input(self) -> None:
        """Browse for the input folder."""
        start = self.input_edit.text() or str(Path.home())
        path = QFileDialog.getExistingDirectory(self, "Folder of studies to score", start)
        if path:
            self.input_edit.setText(path)

    def choose_output(self) -> None:
        """Browse for the results file."""
        start = self.output_edit.text() or self.input_edit.text() or str(Path.home())
        path, _ = QFileDialog.getSaveFileName(
            self, "Results file", start, "CSV (*.csv)", options=QFileDialog.Option.DontConfirmOverwrite
        )
        if path:
            self.output_edit.setText(path if path.lower().endswith(".csv") else path + ".csv")

    def _on_input_changed(self, text: str) -> None:
        out = self.output_edit.text().strip()
        if text.strip() and (not out or out == self._auto_output):
            self._auto_output = str(Path(text.strip()) / "results.csv")
            self.output_edit.setText(self._auto_output)
        self._on_form_changed()

    def request(self) -> BatchRequest | None:
        """The request the form describes, or None (with a status line) when incomplete."""
        input_dir = self.input_edit.text().strip()
        output = self.output_edit.text().strip()
        if not input_dir or not Path(input_dir).expanduser().is_dir():
            self._say("Choose an existing input folder.")
            return None
        if not output:
            self._say("Choose the results file.")
            return None
        if self.model_combo.count() == 0:
            self._say("No AI model installed.")
            return None
        out = Path(output).expanduser()
        exists = out.is_file() and out.stat().st_size > 0
        return BatchRequest(
            input_dir=str(Path(input_dir).expanduser().resolve()),
            output_csv=str(out.resolve()),
            model=self.model_combo.currentText(),
            device=self.device_combo.currentText(),
            resume=exists and self.resume_radio.isChecked(),
            overwrite=exists and self.replace_radio.isChecked(),
            workers=self.workers_spin.value(),
        )

    def _say(self, text: str) -> None:
        self.status.setText(text)

    def start(self) -> bool:
        """Start the batch the form describes; False when the form is incomplete or one runs."""
        req = self.request()
        if req is None or self.runner.running:
            return False
        self._save(req)
        self.error_tree.clear()
        return self.runner.start(req)

    # ------------------------------------------------------------------ runner -> widgets
    def _on_form_changed(self, *_args) -> None:
        out = self.output_edit.text().strip()
        exists = bool(out) and Path(out).expanduser().is_file()
        self.existing_row.setVisible(exists)
        label = self._form.labelForField(self.existing_row)
        if label is not None:
            label.setVisible(exists)
        self._update_buttons()

    def _update_buttons(self) -> None:
        r = self.runner
        editable = not r.running
        for w in (self.input_edit, self.input_button, self.output_edit, self.output_button, self.model_combo,
                  self.device_combo, self.workers_spin, self.resume_radio, self.replace_radio):  # fmt: skip
            w.setEnabled(editable)
        ready = bool(self.input_edit.text().strip() and self.output_edit.text().strip() and self.model_combo.count())
        self.start_button.setEnabled(editable and ready)
        self.start_button.setText("Start again" if r.outcome is not None and not r.running else "Start")
        self.cancel_button.setEnabled(r.running and not r.cancelling)
        csv_path = r.request.output_csv if r.request is not None else self.output_edit.text().strip()
        self.open_results_button.setEnabled(bool(csv_path) and Path(csv_path).is_file())

    def _on_runner_changed(self) -> None:
        r = self.runner
        if r.running and r.total == 0 and r.done == 0:
            self.progress.setRange(0, 0)  # busy until the number of studies is known
        elif not r.running and r.outcome is None and r.total == 0:
            self.progress.setRange(0, 1)  # nothing run yet (or the batch could not start)
            self.progress.setValue(0)
            self.progress.setFormat("")
        else:
            self.progress.setRange(0, max(r.total, 1))
            self.progress.setValue(r.done)
            self.progress.setFormat("%v / %m studies")
        if r.total or r.done:
            parts = [f"{r.done} of {r.total} studies"]
            if r.errors:
                parts.append(f"{r.errors} error{'s' if r.errors != 1 else ''}")
            if r.skipped:
                parts.append(f"{r.skipped} already in the file")
            if r.rate > 0:
                parts.append(format_rate(r.rate))
            if r.running and r.eta is not None and r.done < r.total:
                parts.append(f"about {format_duration(r.eta)} left")
            else:
                parts.append(f"{format_duration(r.elapsed)} elapsed")
            self.detail.setText("  \u00b7  ".join(parts))
        elif not r.running:
            self.detail.setText("")
        if r.status:
            self.status.setText(r.status)
        if r.model_info_text():
            self.setWindowTitle(f"Batch score folder - {r.model_info_text()}")
        n = len(r.error_list)
        title = "Studies that could not be scored"
        self.errors_title.setText(f"{title} ({n})" if n else title)
        self._update_buttons()
        if not r.running:
            self._on_form_changed()

    def _on_error_added(self, study_id: str, message: str) -> None:
        item = QTreeWidgetItem([study_id, message])
        item.setToolTip(1, message)
        self.error_tree.addTopLevelItem(item)

    def _on_error_double_clicked(self, item: QTreeWidgetItem, _col: int) -> None:
        req = self.runner.request
        if req is None:
            return
        from viewer.results_model import study_folder

        path = study_folder(req.input_dir, item.text(0))
        if path is not None:
            self.study_open_requested.emit(str(path))

    def _on_open_results(self) -> None:
        req = self.runner.request
        csv_path = req.output_csv if req is not None else self.output_edit.text().strip()
        input_dir = req.input_dir if req is not None else self.input_edit.text().strip()
        if csv_path:
            self.results_open_requested.emit(csv_path, input_dir)

    def showEvent(self, ev: QShowEvent) -> None:  # noqa: N802
        """The output file may have appeared or gone since the dialog was last shown."""
        super().showEvent(ev)
        if not self.runner.running:
            self._on_form_changed()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel a running batch and wait for its worker (the main window is closing)."""
        return self.runner.shutdown(timeout_ms)

