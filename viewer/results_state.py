"""ResultsState: the failure-case browser's truth (QtCore only, no widgets).

Holds the loaded :class:`~viewer.results_model.CaseSet`, where its studies live, the threshold,
the filter and the sort order; the browser's widgets write through the setters and redraw on the
signals. Asking to open a case emits :attr:`ResultsState.study_open_requested` with the study
folder and the model that scored it; the main window opens it in the reader, where the AI runs
again with that model and draws its heatmaps, contours and attention weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from viewer.results_model import (
    DEFAULT_DESCENDING,
    FILTERS,
    ResultsFileError,
    SORT_KEYS,
    Case,
    CaseSet,
    ConfusionData,
    RocData,
    confusion_data,
    find_truth_file,
    guess_studies_root,
    load_cases,
    roc_data,
    select_cases,
    study_folder,
)

__all__ = ["ResultsState"]

logger = logging.getLogger(__name__)


class ResultsState(QObject):
    """Loaded results, threshold, filter and sort, with change signals.

    Signals (past tense; slots are ``_on_<signal>``):
        cases_changed: Another results file or ground truth was loaded (or cleared).
        threshold_changed(float): The decision threshold changed.
        selection_changed: The filter or the sort order changed.
        studies_root_changed: The folder the study ids are relative to changed.
        message_changed: The one-line status message changed.
        study_open_requested(str, str): Open this study folder with this model (may be ``""``).
    """

    cases_changed = Signal()
    threshold_changed = Signal(float)
    selection_changed = Signal()
    studies_root_changed = Signal()
    message_changed = Signal()
    study_open_requested = Signal(str, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cases: CaseSet | None = None
        self.studies_root: Path | None = None
        self.threshold: float = 0.5
        self.filter: str = "all"
        self.sort_key: str = "error"
        self.descending: bool = True
        self.message: str = ""
        self.roc: RocData | None = None

    # ------------------------------------------------------------------ loading
    def load(
        self,
        results_path: str | Path,
        truth_path: str | Path | None = None,
        studies_root: str | Path | None = None,
        *,
        root_hints: list[str | Path] | None = None,
    ) -> None:
        """Load a results CSV and its ground truth; guess what is not given.

        Ground truth defaults to a ``labels.csv`` in the studies folder or next to the results;
        the studies folder to the first of ``root_hints``, the ground truth's folder, the
        results' folder and its parent that holds the study ids.

        Raises:
            viewer.results_model.ResultsFileError: A file cannot be used (the state is unchanged).
        """
        results_path = Path(results_path)
        hints = [Path(h) for h in (root_hints or []) if h]
        note = ""
        if truth_path is not None:
            cases = load_cases(results_path, truth_path)
        else:
            truth_path = find_truth_file([*hints, Path(studies_root) if studies_root else None, results_path.parent])
            try:
                cases = load_cases(results_path, truth_path)
            except ResultsFileError as exc:
                if truth_path is None:
                    raise
                cases = load_cases(results_path, None)  # a guessed labels.csv that is not ground truth
                note = f" (not used: {exc})"
                truth_path = None
        self.cases = cases
        self.roc = roc_data(cases)
        if studies_root:
            root: Path | None = Path(studies_root)
        else:
            candidates = [*hints, Path(truth_path).parent if truth_path else None, results_path.parent]
            root = guess_studies_root(cases.study_ids, [*candidates, results_path.parent.parent])
        self.studies_root = root
        self.cases_changed.emit()
        self.studies_root_changed.emit()
        self.selection_changed.emit()
        self.set_message(self._summary() + note)

    def set_truth(self, truth_path: str | Path | None) -> None:
        """Load another ground truth for the same results.

        Raises:
            viewer.results_model.ResultsFileError: The file cannot be used.
        """
        if self.cases is None or self.cases.results_path is None:
            return
        self.load(self.cases.results_path, truth_path, self.studies_root)

    def reload(self) -> None:
        """Read the same files again (a batch may have added rows)."""
        if self.cases is not None and self.cases.results_path is not None:
            self.load(self.cases.results_path, self.cases.truth_path, self.studies_root)

    def set_studies_root(self, root: str | Path | None) -> None:
        """The folder the results' study ids are relative to (the batch's input folder)."""
        root = Path(root) if root else None
        if root != self.studies_root:
            self.studies_root = root
            self.studies_root_changed.emit()

    def _summary(self) -> str:
        if self.cases is None:
            return ""
        n = self.cases.counts()
        parts = [f"{n['studies']} studies, {n['scored']} breasts scored"]
        if self.cases.truth_path is None:
            parts.append("no ground truth loaded")
        else:
            parts.append(f"{n['evaluable']} with ground truth ({n['malignant']} malignant)")
        if n["error_studies"]:
            k = n["error_studies"]
            parts.append(f"{k} {'study' if k == 1 else 'studies'} failed")
        if n["unmatched_truth"]:
            k = n["unmatched_truth"]
            parts.append(f"{k} labelled {'breast' if k == 1 else 'breasts'} not in the results")
        return "; ".join(parts)

    # ------------------------------------------------------------------ view settings
    def set_threshold(self, threshold: float) -> None:
        """Decision threshold in ``[0, 1]``: ``p_malignant >= threshold`` is called malignant."""
        t = float(min(max(threshold, 0.0), 1.0))
        if abs(t - self.threshold) > 1e-9:
            self.threshold = t
            self.threshold_changed.emit(t)
            if self.filter != "all":
                self.selection_changed.emit()

    def set_filter(self, kind: str) -> None:
        """One of :data:`viewer.results_model.FILTERS`."""
        if kind not in FILTERS:
            raise ValueError(f"unknown filter {kind!r}; known: {FILTERS}")
        if kind != self.filter:
            self.filter = kind
            self.selection_changed.emit()

    def set_sort(self, key: str, descending: bool | None = None) -> None:
        """Sort by one of :data:`viewer.results_model.SORT_KEYS` (None: that key's default direction)."""
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort key {key!r}; known: {SORT_KEYS}")
        desc = DEFAULT_DESCENDING[key] if descending is None else bool(descending)
        if (key, desc) != (self.sort_key, self.descending):
            self.sort_key, self.descending = key, desc
            self.selection_changed.emit()

    def set_message(self, text: str) -> None:
        """The browser's status line."""
        if text != self.message:
            self.message = text
            self.message_changed.emit()

    # ------------------------------------------------------------------ derived
    def visible_cases(self) -> list[Case]:
        """The rows the table shows: filtered, then sorted."""
        if self.cases is None:
            return []
        return select_cases(
            self.cases.cases, kind=self.filter, threshold=self.threshold, key=self.sort_key, descending=self.descending
        )

    def confusion(self) -> ConfusionData | None:
        """The confusion matrix at the current threshold (None before anything is loaded)."""
        if self.cases is None:
            return None
        return confusion_data(self.cases, self.threshold)

    def study_path(self, case: Case) -> Path | None:
        """The folder of a case's study, or None when it cannot be found."""
        return study_folder(self.studies_root, case.study_id)

    def request_open(self, case: Case) -> bool:
        """Ask to open a case's study in the reader (emits :attr:`study_open_requested`).

        Returns:
            False (and a status message saying why) when the study folder cannot be found.
        """
        path = self.study_path(case)
        if path is None:
            where = str(self.studies_root) if self.studies_root else "no studies folder set"
            self.set_message(f"Study {case.study_id} not found ({where}): choose the studies folder.")
            return False
        self.study_open_requested.emit(str(path), case.model)
        return True
