"""The failure-case browser's data: a ``mammo-score`` CSV joined with ground truth (no Qt).

A researcher loads the results of a batch (SPEC section 3: one row per study and breast side)
together with ground truth, sorts the breasts by how wrong the model was, filters the false
negatives or false positives at a threshold, and plots the ROC curve and the confusion matrix.
Everything here is plain Python and numpy; the numbers come from :mod:`engine.metrics`, so the
browser shows the same AUC and counts as training logs and model cards.

**Unit of analysis: the breast.** Rows are joined on ``(study_id, side)``. A breast is *scored*
when its row has ``status == "ok"`` and a ``p_malignant``; it is *labelled* when the ground truth
has a row for it with a known label. Only scored and labelled breasts enter the ROC curve and the
confusion matrix; error rows (studies that could not be scored), ``missing`` rows (breast not
imaged) and breasts without ground truth are listed but never counted.

**Ground truth.** Any CSV with ``study_id`` and ``side`` columns and a label in one of these
columns, first found wins: ``label``, ``malignant``, ``pathology``, ``truth``, ``y``. A label is
positive for ``1``, ``true``, ``yes``, ``malignant``, ``cancer``, ``positive``; negative for
``0``, ``false``, ``no``, ``benign``, ``normal``, ``negative``; empty, ``-1`` and anything else
mean unknown. The phantom's ``labels.csv`` (``pathology`` = normal / benign / malignant) is read
as is: malignant is positive. Sides may be written ``R``/``L`` or ``right``/``left``.

**Threshold.** A breast is predicted malignant when ``p_malignant >= threshold`` (the convention
of :func:`engine.metrics.roc_curve`). A false negative is a malignant breast below the threshold;
a false positive a non-malignant breast at or above it.

**Sort keys** (:data:`SORT_KEYS`): ``error`` = ``|label - p_malignant|`` (how far the probability
is from the truth, largest first), ``probability`` = ``p_malignant``, ``disagreement`` =
``|p_R - p_L|`` of the study (both breasts of a study share it, so they stay together),
``study`` = study id then side. Rows without the sort value go last whatever the direction.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import metrics

__all__ = [
    "SORT_KEYS",
    "DEFAULT_DESCENDING",
    "FILTERS",
    "LABEL_COLUMNS",
    "ResultsFileError",
    "Case",
    "CaseSet",
    "RocData",
    "ConfusionData",
    "read_results_csv",
    "read_truth_csv",
    "parse_label",
    "parse_side",
    "join_cases",
    "load_cases",
    "sort_cases",
    "filter_cases",
    "select_cases",
    "roc_data",
    "confusion_data",
    "guess_studies_root",
    "find_truth_file",
    "study_folder",
]

logger = logging.getLogger(__name__)

#: Sort keys of the table (module docstring).
SORT_KEYS: tuple[str, ...] = ("error", "probability", "disagreement", "study")
#: Default direction of each sort key (largest error / probability / disagreement first; studies A to Z).
DEFAULT_DESCENDING: dict[str, bool] = {"error": True, "probability": True, "disagreement": True, "study": False}
#: Row filters: every breast, false negatives / positives at the threshold, both, error rows.
FILTERS: tuple[str, ...] = ("all", "false_negatives", "false_positives", "misclassified", "not_scored")
#: Ground-truth columns tried for the label, in order.
LABEL_COLUMNS: tuple[str, ...] = ("label", "malignant", "pathology", "truth", "y")

_POSITIVE = frozenset({"1", "1.0", "true", "yes", "y", "malignant", "malignancy", "cancer", "positive", "pos"})
_NEGATIVE = frozenset({"0", "0.0", "false", "no", "n", "benign", "normal", "negative", "neg"})
_SIDES = {"r": "R", "right": "R", "l": "L", "left": "L"}


class ResultsFileError(ValueError):
    """A results or ground-truth CSV that cannot be used; ``str(err)`` is one line naming the file."""


# --- reading ----------------------------------------------------------------------------------------


def parse_side(text: str) -> str | None:
    """``"R"`` or ``"L"`` from ``R``, ``L``, ``right``, ``left`` (any case); None otherwise."""
    return _SIDES.get(str(text).strip().lower())


def parse_label(text: str) -> int | None:
    """1 (malignant), 0 (not malignant) or None (unknown) from a ground-truth cell."""
    t = str(text).strip().lower()
    if t in _POSITIVE:
        return 1
    if t in _NEGATIVE:
        return 0
    return None


def _float_or_none(text: str | None) -> float | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _read_csv_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsFileError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path.name}: not a UTF-8 text file") from None
    if not text.strip():
        raise ResultsFileError(f"{path.name}: the file is empty")
    return text


def read_results_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read a ``mammo-score`` results CSV.

    A batch may still be writing the file, or a killed run may have left a torn last line: a
    last line without its newline and rows with the wrong number of fields are left out.

    Args:
        path: The CSV.

    Returns:
        ``(columns, rows)``, rows as ``{column: text}``.

    Raises:
        ResultsFileError: Unreadable, or without ``study_id``, ``side`` and ``p_malignant`` columns.
    """
    path = Path(path)
    text = _read_csv_text(path)
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a torn last line (a batch still writing)
    reader = csv.reader(io.StringIO(text))
    try:
        columns = next(reader)
    except StopIteration:
        raise ResultsFileError(f"{path.name}: no header line") from None
    except csv.Error as exc:
        raise ResultsFileError(f"{path.name}: not a CSV file ({exc})") from None
    need = ("study_id", "side", "p_malignant")
    missing = [c for c in need if c not in columns]
    if missing:
        raise ResultsFileError(f"{path.name}: not a mammo-score results file (no {', '.join(missing)} column)")
    rows = []
    try:
        for fields in reader:
            if len(fields) == len(columns):
                rows.append(dict(zip(columns, fields)))
            elif fields:
                logger.debug("%s: skipped a row with %d fields", path.name, len(fields))
    except csv.Error as exc:
        raise ResultsFileError(f"{path.name}: malformed CSV ({exc})") from None
    return columns, rows


def read_truth_csv(path: str | Path) -> dict[tuple[str, str], tuple[int | None, str]]:
    """Read ground truth per breast.

    Args:
        path: A CSV with ``study_id``, ``side`` and a label column (module docstring).

    Returns:
        ``{(study_id, side): (label, text)}``: label 1 / 0 / None (unknown) and the cell's text
        (``malignant``, ``benign``, ``1``, ...), shown in the table.

    Raises:
        ResultsFileError: Unreadable, or without the needed columns.
    """
    path = Path(path)
    text = _read_csv_text(path)
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = columns
    if "study_id" not in columns or "side" not in columns:
        raise ResultsFileError(f"{path.name}: ground truth needs study_id and side columns")
    col = next((c for c in LABEL_COLUMNS if c in columns), None)
    if col is None:
        raise ResultsFileError(
            f"{path.name}: no label column (expected one of {', '.join(LABEL_COLUMNS)})"
        )
    out: dict[tuple[str, str], tuple[int | None, str]] = {}
    bad_sides = 0
    try:
        for row in reader:
            side = parse_side(row.get("side") or "")
            if side is None:
                bad_sides += 1
                continue
            cell = (row.get(col) or "").strip()
            out[(str(row.get("study_id") or "").strip(), side)] = (parse_label(cell), cell)
    except csv.Error as exc:
        raise ResultsFileError(f"{path.name}: malformed CSV ({exc})") from None
    if bad_sides:
        logger.warning("%s: %d row(s) without a usable side were left out", path.name, bad_sides)
    return out


# --- joined cases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One breast of a scored study, with its ground truth.

    Attributes:
        study_id: The batch's study id (study folder relative to the input folder).
        side: ``"R"`` or ``"L"``.
        status: ``"ok"``, ``"missing"`` or ``"error"`` (the results file's column).
        error: The error message of an error row.
        p_malignant: Malignancy probability (None when not scored).
        birads_pred: Predicted BI-RADS category as written (may be empty).
        label: 1 malignant, 0 not malignant, None unknown / no ground truth.
        truth: The ground-truth cell as written (``""`` without ground truth).
        other_p: ``p_malignant`` of the study's other breast (None when not scored).
        model: Model name of the row.
        model_version: Its version.
    """

    study_id: str
    side: str
    status: str
    error: str
    p_malignant: float | None
    birads_pred: str
    label: int | None
    truth: str
    other_p: float | None
    model: str = ""
    model_version: str = ""

    @property
    def scored(self) -> bool:
        """Has a probability (status ok)."""
        return self.status == "ok" and self.p_malignant is not None

    @property
    def evaluable(self) -> bool:
        """Scored and labelled: counted in the ROC curve and the confusion matrix."""
        return self.scored and self.label is not None

    @property
    def abs_error(self) -> float | None:
        """``|label - p_malignant|``, or None when not evaluable."""
        if not self.evaluable:
            return None
        return abs(float(self.label) - float(self.p_malignant))  # type: ignore[arg-type]

    @property
    def disagreement(self) -> float | None:
        """``|p_R - p_L|`` of the study, or None when one breast is not scored."""
        if self.p_malignant is None or self.other_p is None or self.status != "ok":
            return None
        return abs(self.p_malignant - self.other_p)

    def predicted(self, threshold: float) -> int | None:
        """1 when ``p_malignant >= threshold``, 0 below, None when not scored."""
        if not self.scored:
            return None
        return int(self.p_malignant >= threshold)  # type: ignore[operator]

    def outcome(self, threshold: float) -> str:
        """``"TP"``, ``"FP"``, ``"TN"``, ``"FN"`` at ``threshold``; ``""`` when not evaluable."""
        if not self.evaluable:
            return ""
        pred = self.predicted(threshold)
        if self.label == 1:
            return "TP" if pred == 1 else "FN"
        return "FP" if pred == 1 else "TN"


@dataclass
class CaseSet:
    """Every breast of a results file joined with its ground truth.

    Attributes:
        cases: One per results row, in file order.
        results_path: The results CSV.
        truth_path: The ground-truth CSV, or None.
        unmatched_truth: Labelled breasts of the ground truth that have no results row (a
            batch not finished yet, or another folder), sorted.
        columns: The results file's header.
    """

    cases: list[Case]
    results_path: Path | None = None
    truth_path: Path | None = None
    unmatched_truth: list[tuple[str, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    @property
    def study_ids(self) -> list[str]:
        """Study ids in file order, once each."""
        return list(dict.fromkeys(c.study_id for c in self.cases))

    @property
    def evaluable(self) -> list[Case]:
        """Scored and labelled breasts."""
        return [c for c in self.cases if c.evaluable]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, scores)`` of the evaluable breasts: ``(N,)`` int64 and float64."""
        ev = self.evaluable
        y = np.array([c.label for c in ev], dtype=np.int64)
        s = np.array([c.p_malignant for c in ev], dtype=np.float64)
        return y, s

    @property
    def models(self) -> list[str]:
        """Model names found in the scored rows (normally exactly one)."""
        return sorted({c.model for c in self.cases if c.model and c.status != "error"})

    def counts(self) -> dict[str, int]:
        """``breasts``, ``scored``, ``evaluable``, ``malignant`` (evaluable positives),
        ``studies``, ``error_studies``, ``missing`` (breasts not imaged), ``unlabelled``
        (scored without ground truth), ``unmatched_truth``."""
        ev = self.evaluable
        return {
            "breasts": len(self.cases),
            "scored": sum(c.scored for c in self.cases),
            "evaluable": len(ev),
            "malignant": sum(c.label == 1 for c in ev),
            "studies": len(self.study_ids),
            "error_studies": len({c.study_id for c in self.cases if c.status == "error"}),
            "missing": sum(c.status == "missing" for c in self.cases),
            "unlabelled": sum(c.scored and c.label is None for c in self.cases),
            "unmatched_truth": len(self.unmatched_truth),
        }


def join_cases(
    rows: Iterable[Mapping[str, str]],
    truth: Mapping[tuple[str, str], tuple[int | None, str]] | None = None,
) -> tuple[list[Case], list[tuple[str, str]]]:
    """Join results rows with ground truth on ``(study_id, side)``.

    Args:
        rows: Results rows (``{column: text}``).
        truth: :func:`read_truth_csv`'s mapping, or None.

    Returns:
        ``(cases, unmatched)``: one :class:`Case` per row with a usable side, and the labelled
        breasts of ``truth`` that no row has.
    """
    rows = [r for r in rows if parse_side(r.get("side", "")) is not None]
    truth = truth or {}
    p_by_breast: dict[tuple[str, str], float | None] = {}
    for r in rows:
        sid, side = r.get("study_id", ""), parse_side(r["side"])
        p = _float_or_none(r.get("p_malignant")) if r.get("status", "ok") == "ok" else None
        p_by_breast[(sid, side)] = p  # type: ignore[index]
    cases = []
    for r in rows:
        sid, side = r.get("study_id", ""), parse_side(r["side"])
        assert side is not None
        status = (r.get("status") or "ok").strip() or "ok"
        label, text = truth.get((sid, side), (None, ""))
        cases.append(
            Case(
                study_id=sid,
                side=side,
                status=status,
                error=r.get("error", "") or "",
                p_malignant=p_by_breast[(sid, side)],
                birads_pred=r.get("birads_pred", "") or "",
                label=label,
                truth=text,
                other_p=p_by_breast.get((sid, "L" if side == "R" else "R")),
                model=r.get("model", "") or "",
                model_version=r.get("model_version", "") or "",
            )
        )
    unmatched = sorted(k for k, (lab, _t) in truth.items() if lab is not None and k not in p_by_breast)
    return cases, unmatched


def load_cases(results_path: str | Path, truth_path: str | Path | None = None) -> CaseSet:
    """Read a results CSV (and ground truth) and join them.

    Raises:
        ResultsFileError: A file cannot be used.
    """
    columns, rows = read_results_csv(results_path)
    truth = read_truth_csv(truth_path) if truth_path else None
    cases, unmatched = join_cases(rows, truth)
    return CaseSet(
        cases,
        Path(results_path),
        Path(truth_path) if truth_path else None,
        unmatched,
        columns,
    )


# --- sorting and filtering ------------------------------------------------------------------------------


def _sort_value(case: Case, key: str) -> float | None:
    if key == "error":
        return case.abs_error
    if key == "probability":
        return case.p_malignant if case.scored else None
    if key == "disagreement":
        return case.disagreement
    raise ValueError(f"unknown sort key {key!r}; known: {SORT_KEYS}")


def sort_cases(cases: Sequence[Case], key: str = "error", *, descending: bool | None = None) -> list[Case]:
    """Sort breasts by one of :data:`SORT_KEYS` (``descending=None``: :data:`DEFAULT_DESCENDING`).

    Ties (and ``study``) go by study id then side (R before L), so a study's two breasts stay
    together under ``disagreement``. Rows without a value for ``key`` come last in either direction.
    """
    order = {"R": 0, "L": 1}

    def ident(c: Case) -> tuple[str, int]:
        return (c.study_id, order.get(c.side, 2))

    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r}; known: {SORT_KEYS}")
    if descending is None:
        descending = DEFAULT_DESCENDING[key]
    if key == "study":
        return sorted(cases, key=ident, reverse=descending)
    have = [c for c in cases if _sort_value(c, key) is not None]
    lack = [c for c in cases if _sort_value(c, key) is None]
    have = sorted(have, key=ident)  # stable: ties keep study order
    have.sort(key=lambda c: _sort_value(c, key), reverse=descending)  # type: ignore[arg-type, return-value]
    return have + sorted(lack, key=ident)


def filter_cases(cases: Iterable[Case], kind: str, threshold: float) -> list[Case]:
    """Keep the breasts of one of :data:`FILTERS` at ``threshold``.

    ``false_negatives``: malignant and ``p < threshold``; ``false_positives``: not malignant and
    ``p >= threshold``; ``misclassified``: both; ``not_scored``: error and missing rows.
    """
    if kind == "all":
        return list(cases)
    if kind == "false_negatives":
        return [c for c in cases if c.outcome(threshold) == "FN"]
    if kind == "false_positives":
        return [c for c in cases if c.outcome(threshold) == "FP"]
    if kind == "misclassified":
        return [c for c in cases if c.outcome(threshold) in ("FN", "FP")]
    if kind == "not_scored":
        return [c for c in cases if not c.scored]
    raise ValueError(f"unknown filter {kind!r}; known: {FILTERS}")


def select_cases(
    cases: Sequence[Case],
    *,
    kind: str = "all",
    threshold: float = 0.5,
    key: str = "error",
    descending: bool | None = None,
) -> list[Case]:
    """:func:`filter_cases` then :func:`sort_cases`: the rows the table shows."""
    return sort_cases(filter_cases(cases, kind, threshold), key, descending=descending)


# --- ROC and confusion matrix ----------------------------------------------------------------------


@dataclass(frozen=True)
class RocData:
    """The ROC curve of the evaluable breasts (:func:`engine.metrics.roc_curve`).

    Attributes:
        fpr: False positive rates, ``(M + 1,)`` from 0 to 1.
        tpr: True positive rates.
        thresholds: Thresholds (the first is ``inf``).
        auc: :func:`engine.metrics.binary_auc`.
        n_positive: Malignant breasts.
        n_negative: Non-malignant breasts.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float
    n_positive: int
    n_negative: int

    def nearest_threshold(self, fpr: float, tpr: float) -> float:
        """The threshold of the curve point nearest ``(fpr, tpr)``, clipped to ``[0, 1]``."""
        i = int(np.argmin((self.fpr - fpr) ** 2 + (self.tpr - tpr) ** 2))
        return float(min(max(self.thresholds[i], 0.0), 1.0))


@dataclass(frozen=True)
class ConfusionData:
    """The confusion matrix at a threshold (:func:`engine.metrics.confusion_matrix`).

    Attributes:
        matrix: ``(2, 2)`` counts, rows = truth (not malignant, malignant), columns = prediction.
        threshold: Scores ``>=`` this are predicted malignant.
    """

    matrix: np.ndarray
    threshold: float

    @property
    def tn(self) -> int:
        return int(self.matrix[0, 0])

    @property
    def fp(self) -> int:
        return int(self.matrix[0, 1])

    @property
    def fn(self) -> int:
        return int(self.matrix[1, 0])

    @property
    def tp(self) -> int:
        return int(self.matrix[1, 1])

    @property
    def sensitivity(self) -> float | None:
        """TP / (TP + FN); None without a malignant breast."""
        n = self.tp + self.fn
        return self.tp / n if n else None

    @property
    def specificity(self) -> float | None:
        """TN / (TN + FP); None without a non-malignant breast."""
        n = self.tn + self.fp
        return self.tn / n if n else None


def roc_data(cases: CaseSet | Sequence[Case]) -> RocData | None:
    """The ROC curve and AUC of the evaluable breasts; None when one class is absent."""
    cs = cases if isinstance(cases, CaseSet) else CaseSet(list(cases))
    y, s = cs.arrays()
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    fpr, tpr, thr = metrics.roc_curve(y, s)
    return RocData(fpr, tpr, thr, metrics.binary_auc(y, s), n_pos, n_neg)


def confusion_data(cases: CaseSet | Sequence[Case], threshold: float) -> ConfusionData:
    """The 2 x 2 confusion matrix of the evaluable breasts at ``threshold``."""
    cs = cases if isinstance(cases, CaseSet) else CaseSet(list(cases))
    y, s = cs.arrays()
    pred = (s >= threshold).astype(np.int64)
    return ConfusionData(metrics.confusion_matrix(y, pred, n_classes=2), float(threshold))


# --- where the studies are -------------------------------------------------------------------------------


def study_folder(root: str | Path | None, study_id: str) -> Path | None:
    """The folder of ``study_id`` under the batch's input folder ``root``, or None when absent.

    ``study_id`` is the study folder relative to ``root``; when ``root`` itself was the study,
    the id is ``root``'s own name.
    """
    if root is None or not study_id:
        return None
    root = Path(root)
    p = root / study_id
    if p.is_dir():
        return p
    if root.name == study_id and root.is_dir():
        return root
    return None


def guess_studies_root(
    study_ids: Sequence[str], candidates: Iterable[str | Path | None], *, sample: int = 50
) -> Path | None:
    """The first candidate folder holding the most of ``study_ids`` (checked on a sample).

    Args:
        study_ids: Ids of the results file.
        candidates: Folders to try in order of preference (None entries are skipped).
        sample: How many ids to check per candidate (evenly spread).

    Returns:
        The best folder, or None when no candidate holds any of the studies.
    """
    if not study_ids:
        return None
    step = max(1, len(study_ids) // sample)
    probe = list(study_ids[::step])[:sample]
    best, best_hits = None, 0
    seen: set[Path] = set()
    for cand in candidates:
        if cand is None:
            continue
        folder = Path(cand)
        if folder in seen or not folder.is_dir():
            continue
        seen.add(folder)
        hits = sum(study_folder(folder, sid) is not None for sid in probe)
        if hits > best_hits:
            best, best_hits = folder, hits
            if hits == len(probe):
                break
    return best


def find_truth_file(folders: Iterable[str | Path | None], names: Sequence[str] = ("labels.csv",)) -> Path | None:
    """The first ``labels.csv`` (or other ``names``) found in ``folders``, or None."""
    for folder in folders:
        if folder is None:
            continue
        for name in names:
            p = Path(folder) / name
            if p.is_file():
                return p
    return None
