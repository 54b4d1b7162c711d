"""Batch scoring: every study under a folder -> one crash-safe CSV (+ per-study output files).

``mammo-score`` (:func:`engine.cli.score_main`) and the viewer's batch dialog both call
:func:`run_batch`; SPEC section 3 is the contract.

**What is a study.** The input folder is walked in sorted order. A *study* is the top-most folder
that directly contains at least one image file: a raster image (``.png``, ``.jpg``, ``.tif``, ...)
or a DICOM file (suffix ``.dcm``/``.dicom``/``.dic``/``.ima``, or the ``DICM`` marker after the
128-byte preamble, so suffix-less DICOM files count). Its sub-folders belong to it (the loader reads
a study recursively: ``P0001/us/US_L_1.dcm`` is part of ``P0001``) and are not studies of their
own. Files and folders the loader ignores never make a folder a study: hidden entries, tables and
documents (the phantom's ``labels.csv``, ``annotations.csv``, ``phantom.json``), ``masks/``
folders, ``*_mask.png`` and ``*_heatmap.png`` files, and the output folders of the batch itself
when they lie inside the input. The input folder itself is a study when it directly holds images
(its ``study_id`` is then its own name). ``study_id`` is the study folder's path relative to the
input folder with POSIX separators (``site1/P0001``).

**The CSV.** One row per study and breast side (``R`` then ``L``), columns (:func:`csv_columns`,
built from the model's tasks and classes so other model kinds add their own)::

    study_id, side, status, error, p_malignant, [p_<class> ... for malignancy heads with more
    than two classes, e.g. p_normal, p_benign], birads_pred, p_birads_<k> (the model's BI-RADS
    categories), attn_RCC, attn_LCC, attn_RMLO, attn_LMLO, model, model_version, device, seconds

``status`` is ``ok``; ``missing`` when that breast has no CC or MLO image (the scores are empty:
the model has nothing to say about it); or ``error`` when the study could not be loaded or scored.
A broken study gets **two** error rows (``R`` and ``L``) carrying the same one-line message, so
every study has exactly one row per side whatever happened: joins with ground truth on
``(study_id, side)`` are uniform and a study's rows are complete exactly when both sides are
there. ``attn_*`` are the study's view attention weights (the same on both rows; 0 for a missing
view, empty when the model gives none); ``seconds`` is the study's wall time (load + score +
outputs). Probabilities are written with 8 significant digits.

**Crash safety.** A study's rows are encoded into one block and appended with a single
``os.write`` on an ``O_APPEND`` descriptor, then ``fsync``; per-study output files are written
(each atomically: temporary name, then ``os.replace``) before the rows, so a row on disk means its
study is finished. The header is written once, when the file is created. A ``kill -9`` can only
interrupt the last block; on ``resume`` :class:`ResultsCsv` repairs the tail: a torn last line
(no final newline) and a study whose rows are not all there are cut off (``ftruncate``), and that
study is scored again. The file is locked (``flock``) while a batch writes to it, so two batches
cannot interleave rows.

**Resume.** Studies with a complete row set in the file (``ok`` or ``error``) are skipped; no row
is ever written twice. ``retry_errors=True`` first removes the error rows (the file is rewritten
atomically) so those studies are tried again. Resuming checks that the header and the model
match the file.

**Loading in parallel.** With ``workers >= 1`` studies are decoded by ``workers`` loaders
(threads, or processes with ``loader="process"``) a few studies ahead, in input order, while the
model scores in the calling thread; at most ``2 * workers`` loaded studies wait at any time, so
memory stays flat over a batch. ``workers=0`` loads in the calling thread (the plain sequential
loop). Threads are the default: a loaded study's pixel arrays reach the model without a copy,
while a loader process pickles every study through a pipe (10 MB for a demo-size study, 160 MB
for a full-field one), which cost more than the GIL contention it avoids on the machines measured
(``bench/bench_batch.py``, ``bench/RESULTS.md``). Loader processes are spawned (never forked from
a process holding torch threads) and exit by themselves when the batch process dies.
:attr:`BatchSummary.timings` says where the calling thread's time went (``load_wait`` high:
loading is the bottleneck, add workers; ``score`` high: the model is).

**Per-study outputs** (created folders; ``<stem>`` is the source file's stem, or its relative
path with ``_`` for ``/`` when two views share a stem): ``heatmaps_dir/<study_id>/<stem>_heatmap.png``
(16-bit, the Grad-CAM map in ``[0, 1]`` scaled to ``0..65535``, original pixel grid),
``masks_dir/<study_id>/<stem>_mask.png`` (8-bit, 255 inside a lesion, original grid; only from
models that segment, see :func:`lesion_masks`), ``json_dir/<study_id>.json``
(:meth:`engine.result.Result.to_json`) and ``dicom_dir/<study_id>/`` (:mod:`engine.dicom_export`).
Grad-CAM runs only when an output needs it (heatmaps, JSON, DICOM).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from engine.errors import Cancelled, MammoError, StudyError
from engine.io.dicom import is_dicom_file
from engine.io.loader import IGNORED_SUFFIXES, is_ignored, load_study
from engine.io.raster import RASTER_SUFFIXES
from engine.study import STANDARD_VIEWS

if TYPE_CHECKING:
    from engine.inference import Engine
    from engine.result import Result
    from engine.study import Study

__all__ = [
    "SIDES",
    "STATUSES",
    "ATTENTION_COLUMNS",
    "StudyRef",
    "find_studies",
    "csv_columns",
    "engine_columns",
    "result_rows",
    "error_rows",
    "ResultsTable",
    "read_results",
    "ResultsCsv",
    "lesion_masks",
    "output_stems",
    "write_heatmaps",
    "write_masks",
    "BatchProgress",
    "BatchSummary",
    "run_batch",
]

logger = logging.getLogger(__name__)

#: Breast sides, in row order.
SIDES: tuple[str, ...] = ("R", "L")
#: Values of the ``status`` column.
STATUSES: tuple[str, ...] = ("ok", "missing", "error")
#: ``{view: column}`` of the attention weights.
ATTENTION_COLUMNS: dict[str, str] = {v: "attn_" + v.replace("-", "") for v in STANDARD_VIEWS}

_DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima"})
_HEAD = ("study_id", "side", "status", "error")
_TAIL = ("model", "model_version", "device", "seconds")
_MESSAGE_LIMIT = 400

LoaderKind = Literal["thread", "process"]
ProgressFn = Callable[["BatchProgress"], None]
CancelFn = Callable[[], bool]


# --- studies ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRef:
    """A study found under the input folder.

    Attributes:
        study_id: Path of the study folder relative to the input folder (POSIX separators), or
            the input folder's own name when it is the study.
        path: The study folder.
    """

    study_id: str
    path: Path


def _is_image_file(folder: Path, name: str) -> bool:
    """Whether ``folder/name`` is an image file that makes ``folder`` a study."""
    rel = Path(name)
    if is_ignored(rel):
        return False
    suffix = rel.suffix.lower()
    if suffix in RASTER_SUFFIXES or suffix in _DICOM_SUFFIXES:
        return True
    if suffix in IGNORED_SUFFIXES:
        return False
    return is_dicom_file(folder / name)


def find_studies(input_dir: str | Path, *, exclude: Iterable[str | Path] = ()) -> list[StudyRef]:
    """Every study under a folder (module docstring for the rule), in sorted path order.

    Args:
        input_dir: The folder to walk.
        exclude: Folders to leave out with everything below them (the batch's own output
            folders when they lie inside the input).

    Returns:
        The studies; empty when there is none.

    Raises:
        StudyError: ``input_dir`` is not a folder.
    """
    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise StudyError(root, "no such folder")
    root = root.resolve()
    skip = {Path(p).expanduser().resolve() for p in exclude}
    found: list[StudyRef] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if any(_is_image_file(here, name) for name in sorted(filenames)):
            rel = here.relative_to(root).as_posix()
            study_id = root.name if rel == "." else rel
            if "\n" in study_id or "\r" in study_id:
                logger.warning("skipped a study folder whose name holds a line break")
            else:
                found.append(StudyRef(study_id, here))
            dirnames[:] = []  # its sub-folders belong to it
            continue
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and d.lower() != "masks" and (here / d).resolve() not in skip
        )
    return found


# --- columns and rows --------------------------------------------------------------------------------


def _slug(name: Any) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def csv_columns(tasks: Sequence[str], classes: Mapping[str, Sequence[Any]]) -> list[str]:
    """The CSV header for a model with these tasks and classes (SPEC section 3).

    ``p_malignant`` and ``birads_pred`` are always there (empty when the model lacks the task);
    a malignancy head with more than two classes adds ``p_<class>`` for each other class; a
    BI-RADS head adds ``p_birads_<k>`` for the categories it scores. Other tasks add nothing
    until :class:`~engine.result.SideResult` carries them.

    Args:
        tasks: The model's tasks (``Engine.tasks``).
        classes: Class names per task (``Engine.classes``).

    Returns:
        Column names in order.
    """
    cols = list(_HEAD) + ["p_malignant"]
    if "malignancy" in tasks:
        names = list(classes.get("malignancy", []))
        if len(names) > 2:
            cols += [f"p_{_slug(c)}" for c in names if f"p_{_slug(c)}" not in cols]
    cols.append("birads_pred")
    if "birads" in tasks:
        cols += [f"p_birads_{_slug(k)}" for k in classes.get("birads", [])]
    for task in tasks:
        if task not in ("malignancy", "birads"):
            logger.debug("task %s has no CSV columns yet", task)
    cols += list(ATTENTION_COLUMNS.values()) + list(_TAIL)
    return cols


def engine_columns(engine: Engine) -> list[str]:
    """:func:`csv_columns` for an :class:`~engine.inference.Engine`."""
    return csv_columns(engine.tasks, engine.classes)


def _num(x: float | None) -> str:
    return "" if x is None else f"{float(x):.8g}"


def _one_line(message: str) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _error_message(exc: BaseException) -> str:
    """One line for the ``error`` column: typed errors as they are, others with their type."""
    if isinstance(exc, MammoError):
        return _one_line(str(exc))
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return _one_line(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def result_rows(
    result: Result, columns: Sequence[str], *, study_id: str, seconds: float
) -> list[dict[str, str]]:
    """The two rows (``R``, ``L``) of a scored study.

    Args:
        result: The study's result.
        columns: The header (:func:`csv_columns`); keys outside it are not produced.
        study_id: The batch's study id.
        seconds: Wall time spent on the study.

    Returns:
        One ``{column: text}`` dict per side, every column present.
    """
    rows = []
    for side in SIDES:
        sr = result.sides.get(side)
        row = dict.fromkeys(columns, "")
        row.update(study_id=study_id, side=side, model=result.model,
                   model_version=result.model_version, device=result.device,
                   seconds=f"{seconds:.3f}")  # fmt: skip
        for view, col in ATTENTION_COLUMNS.items():
            if result.attention and col in row:
                row[col] = _num(result.attention.get(view, 0.0))
        if sr is None or not sr.available:
            row["status"] = "missing"
        else:
            row["status"] = "ok"
            row["p_malignant"] = _num(sr.p_malignant)
            for name, p in sr.p_pathology.items():
                col = f"p_{_slug(name)}"
                if col in row and col != "p_malignant":
                    row[col] = _num(p)
            for k, p in sr.p_birads.items():
                col = f"p_birads_{_slug(k)}"
                if col in row:
                    row[col] = _num(p)
            row["birads_pred"] = "" if sr.birads_pred is None else str(sr.birads_pred)
        rows.append({c: row[c] for c in columns})
    return rows


def error_rows(
    columns: Sequence[str],
    *,
    study_id: str,
    message: str,
    model: str = "",
    model_version: str = "",
    device: str = "",
    seconds: float = 0.0,
) -> list[dict[str, str]]:
    """The two ``error`` rows (``R``, ``L``) of a study that could not be loaded or scored."""
    rows = []
    for side in SIDES:
        row = dict.fromkeys(columns, "")
        row.update(study_id=study_id, side=side, status="error", error=_one_line(message),
                   model=model, model_version=model_version, device=device,
                   seconds=f"{seconds:.3f}")  # fmt: skip
        rows.append({c: row[c] for c in columns})
    return rows


# --- the CSV file ------------------------------------------------------------------------------------


def _encode_rows(columns: Sequence[str], rows: Iterable[Mapping[str, str]] | None) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if rows is None:
        writer.writerow(columns)
    else:
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns])
    return buf.getvalue().encode("utf-8")


@dataclass
class ResultsTable:
    """A results CSV as read back by :func:`read_results`.

    Attributes:
        columns: The header.
        rows: Every complete row, in file order (``{column: text}``).
        studies: ``{study_id: status}`` of the studies with a complete row set (``"error"`` when
            any of its rows is an error row, else ``"ok"``).
        complete_bytes: Length of the file prefix made of the header and complete row sets.
        size_bytes: The file's size.
        torn_line: True when the file ended with a line without its newline.
        incomplete_study: The study whose row set was cut short at the end, or None.
    """

    columns: list[str]
    rows: list[dict[str, str]]
    studies: dict[str, str]
    complete_bytes: int
    size_bytes: int
    torn_line: bool = False
    incomplete_study: str | None = None

    @property
    def intact(self) -> bool:
        """True when nothing needs repair."""
        return self.complete_bytes == self.size_bytes


def _parse_results(data: bytes, where: Path) -> ResultsTable:
    """Parse a results file's bytes; the tail past the last complete row set is reported."""
    size = len(data)
    end = data.rfind(b"\n") + 1  # past the last complete line (0 when there is none)
    torn = end < size
    if end == 0:
        return ResultsTable([], [], {}, 0, size, torn_line=torn)
    lines = data[:end].split(b"\n")[:-1]
    try:
        texts = [line.decode("utf-8") for line in lines]
    except UnicodeDecodeError as exc:
        raise MammoError(f"{where.name}: not a UTF-8 results file ({exc.reason})") from None
    parsed = list(csv.reader(texts))
    if len(parsed) != len(texts):  # a field with a line break: not written by this module
        raise MammoError(f"{where.name}: a field spans lines; not a mammo-score results file")
    columns = parsed[0]
    if columns[:2] != ["study_id", "side"] or "status" not in columns:
        raise MammoError(f"{where.name}: not a mammo-score results file (header {','.join(columns[:4])},...)")
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    rows: list[dict[str, str]] = []
    studies: dict[str, str] = {}
    complete = offsets[1]
    i = 1
    incomplete = None
    while i < len(parsed):
        study_id = parsed[i][0] if parsed[i] else ""
        j = i
        while j < len(parsed) and parsed[j] and parsed[j][0] == study_id and j - i < len(SIDES):
            j += 1
        group = parsed[i:j]
        ok = (
            len(group) == len(SIDES)
            and all(len(r) == len(columns) for r in group)
            and [r[1] for r in group] == list(SIDES)
        )
        if not ok:
            if j < len(parsed):
                raise MammoError(
                    f"{where.name}: line {i + 1}: incomplete or malformed rows for study "
                    f"{study_id!r} before the end of the file; it was not written by mammo-score alone"
                )
            incomplete = study_id
            break
        if study_id in studies:
            raise MammoError(f"{where.name}: line {i + 1}: study {study_id!r} appears twice")
        recs = [dict(zip(columns, r)) for r in group]
        rows += recs
        studies[study_id] = "error" if any(r.get("status") == "error" for r in recs) else "ok"
        complete = offsets[j]
        i = j
    return ResultsTable(columns, rows, studies, complete, size, torn_line=torn, incomplete_study=incomplete)


def read_results(path: str | Path) -> ResultsTable:
    """Read a ``mammo-score`` CSV: the complete row sets, and what (if anything) is torn.

    Raises:
        MammoError: Not a results file, or damaged before its last study.
        OSError: The file cannot be read.
    """
    path = Path(path)
    return _parse_results(path.read_bytes(), path)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class ResultsCsv:
    """The crash-safe results file of a batch (module docstring: crash safety and resume).

    Args:
        path: The CSV file.
        columns: Its header.
        resume: Continue an existing file: repair its tail and skip its studies. A missing
            file is simply created.
        overwrite: Replace an existing file.
        retry_errors: With ``resume``, drop the error rows first so those studies run again.

    Raises:
        MammoError: The file exists and neither ``resume`` nor ``overwrite`` is given; its
            header differs from ``columns``; it is damaged before its last study; or another
            batch holds it.
        OSError: It cannot be created or written.

    Attributes:
        done: ``{study_id: status}`` of the studies already in the file.
        repaired: What was cut off the tail on opening (empty when nothing).
        existing: The rows already in the file when it was opened.
    """

    def __init__(
        self,
        path: str | Path,
        columns: Sequence[str],
        *,
        resume: bool = False,
        overwrite: bool = False,
        retry_errors: bool = False,
    ) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.done: dict[str, str] = {}
        self.repaired: list[str] = []
        self.existing: list[dict[str, str]] = []
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists and not (resume or overwrite):
            raise MammoError(
                f"{self.path.name}: already exists; pass --resume to continue it or --overwrite to replace it"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
        self._truncate = overwrite and not resume  # emptied only once the lock is held
        self._fd: int | None = os.open(self.path, flags, 0o644)
        try:
            self._lock()
            self._open_existing(retry_errors)
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise MammoError(f"{self.path.name}: another batch is writing to this file") from None

    def _open_existing(self, retry_errors: bool) -> None:
        assert self._fd is not None
        if self._truncate:
            os.ftruncate(self._fd, 0)
        size = os.fstat(self._fd).st_size
        chunks: list[bytes] = []
        got = 0
        os.lseek(self._fd, 0, os.SEEK_SET)
        while got < size:
            chunk = os.read(self._fd, size - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        data = b"".join(chunks)
        table = _parse_results(data, self.path)
        if table.columns and table.columns != self.columns:
            raise MammoError(
                f"{self.path.name}: was written with other columns (another model?); "
                "write to a new file or pass --overwrite"
            )
        if not table.intact:
            if table.incomplete_study is not None:
                self.repaired.append(f"incomplete rows of study {table.incomplete_study}")
            if table.torn_line:
                self.repaired.append("a torn last line")
            logger.info("%s: removed %s (from an interrupted run)", self.path.name, " and ".join(self.repaired))
            os.ftruncate(self._fd, table.complete_bytes)
            os.fsync(self._fd)
        self.done = dict(table.studies)
        self.existing = list(table.rows)
        if not table.columns:  # new (or emptied) file: the header, once
            self._write(_encode_rows(self.columns, None))
            _fsync_dir(self.path.parent)
        elif retry_errors and any(s == "error" for s in self.done.values()):
            self._drop_errors()

    def _drop_errors(self) -> None:
        keep = [r for r in self.existing if self.done.get(r["study_id"]) != "error"]
        dropped = sorted({r["study_id"] for r in self.existing} - {r["study_id"] for r in keep})
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(_encode_rows(self.columns, None) + _encode_rows(self.columns, keep))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)  # the old descriptor (and its lock) now point at the old file
        _fsync_dir(self.path.parent)
        old = self._fd
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | getattr(os, "O_BINARY", 0))
        os.close(old)
        self._lock()
        for sid in dropped:
            del self.done[sid]
        self.existing = keep
        logger.info("%s: removed the error rows of %d studies to score them again", self.path.name, len(dropped))

    def _write(self, block: bytes) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path.name}: results file is closed")
        view = memoryview(block)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def append(self, rows: Sequence[Mapping[str, str]]) -> None:
        """Append one study's complete row set with one write, and make it durable (fsync)."""
        if not rows:
            return
        self._write(_encode_rows(self.columns, rows))
        sid = rows[0]["study_id"]
        self.done[sid] = "error" if any(r.get("status") == "error" for r in rows) else "ok"

    def close(self) -> None:
        """Close the file (releases the lock). Safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultsCsv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- per-study outputs -------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _png_bytes(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - cv2 refuses only unsupported dtypes
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def output_stems(study: Study, views: Iterable[str]) -> dict[str, str]:
    """``{view: stem}`` for per-image output names: the source file's stem, or its relative path
    without suffix (``/`` -> ``_``) when two views share a stem."""
    views = [v for v in views if v in study.views]
    stems = {v: Path(study.views[v].relpath).stem for v in views}
    counts: dict[str, int] = {}
    for s in stems.values():
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    for v in views:
        if counts[stems[v].lower()] > 1:
            stems[v] = str(Path(study.views[v].relpath).with_suffix("")).replace("\\", "/").replace("/", "_")
    return stems


def lesion_masks(result: Result) -> dict[str, np.ndarray]:
    """``{view: bool (rows, columns)}`` lesion masks in the original pixel grid, from a model that
    segments; empty otherwise.

    Taken from ``result.masks`` when a result carries mask arrays, else filled from the contours
    when they outline a segmentation output (``contour_source == "segmentation"``): a pixel is
    inside when its centre lies inside an odd number of a view's polygons (even-odd rule, so an
    outline inside an outline is a hole), which makes the mask's pixel count match the polygons'
    area. Other outlines (a heatmap's hot region) are not lesion masks and give nothing.
    """
    from skimage.draw import polygon as fill_polygon

    arrays = getattr(result, "masks", None)
    if isinstance(arrays, Mapping) and arrays:
        return {v: np.asarray(m).astype(bool) for v, m in arrays.items()}
    if result.contour_source != "segmentation":
        return {}
    out: dict[str, np.ndarray] = {}
    for view, polys in result.contours.items():
        geometry = result.geometries.get(view)
        if geometry is None:
            continue
        shape = tuple(int(n) for n in geometry.original_shape)
        mask = np.zeros(shape, bool)
        for poly in polys:
            xy = np.asarray(poly, np.float64).reshape(-1, 2)
            if len(xy) >= 3:
                rr, cc = fill_polygon(xy[:, 1], xy[:, 0], shape=shape)
                mask[rr, cc] ^= True
        out[view] = mask
    return out


def write_heatmaps(study: Study, result: Result, out_dir: Path) -> list[Path]:
    """Write each view's heatmap as a 16-bit PNG in the original grid: ``<stem>_heatmap.png``."""
    views = [v for v in result.heatmaps if v in study.views]
    stems = output_stems(study, views)
    written = []
    for view in views:
        h = np.clip(np.asarray(result.heatmaps[view], np.float32), 0.0, 1.0)
        path = out_dir / f"{stems[view]}_heatmap.png"
        _atomic_write(path, _png_bytes(np.round(h * 65535.0).astype(np.uint16)))
        written.append(path)
    return written


def write_masks(study: Study, masks: Mapping[str, np.ndarray], out_dir: Path) -> list[Path]:
    """Write each view's lesion mask as an 8-bit PNG (0 / 255): ``<stem>_mask.png``."""
    views = [v for v in STANDARD_VIEWS if v in masks and v in study.views]
    stems = output_stems(study, views)
    written = []
    for view in views:
        path = out_dir / f"{stems[view]}_mask.png"
        _atomic_write(path, _png_bytes(np.where(masks[view], 255, 0).astype(np.uint8)))
        written.append(path)
    return written


# --- loading ahead -----------------------------------------------------------------------------------


@dataclass
class _Loaded:
    study: Study | None
    message: str | None
    seconds: float


def _load_one(path: str) -> _Loaded:
    """Load one study (runs in a loader thread or process); errors become a message."""
    t0 = time.perf_counter()
    try:
        study = load_study(path)
    except Exception as exc:  # batch boundary: one study never stops the batch
        logger.debug("cannot load %s", Path(path).name, exc_info=True)
        return _Loaded(None, _error_message(exc), time.perf_counter() - t0)
    return _Loaded(study, None, time.perf_counter() - t0)


def _watch_parent(parent: int) -> None:
    """Exit this loader process when its parent is gone (a ``kill -9`` leaves no orphans)."""
    while os.getppid() == parent:
        time.sleep(0.25)
    os._exit(0)


def _loader_process_init(parent: int) -> None:
    """Loader-process initialiser: watch the parent; keep pydicom's warnings off the terminal."""
    import threading
    import warnings

    threading.Thread(target=_watch_parent, args=(parent,), name="mammo-parent-watch", daemon=True).start()
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)


class _Prefetcher:
    """Loads studies ahead, in order, with at most ``2 * workers`` loaded studies waiting."""

    def __init__(self, refs: Sequence[StudyRef], workers: int, loader: LoaderKind) -> None:
        self._refs = list(refs)
        self._workers = workers
        self._pool: Executor | None = None
        if workers > 0 and len(self._refs) > 0:
            if loader == "process":
                import multiprocessing

                ctx = multiprocessing.get_context("spawn")  # never fork a process holding torch threads
                self._pool = ProcessPoolExecutor(
                    workers, mp_context=ctx, initializer=_loader_process_init, initargs=(os.getpid(),)
                )
            elif loader == "thread":
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="mammo-load")
            else:
                raise ValueError(f"loader must be 'thread' or 'process', got {loader!r}")

    def __iter__(self) -> Iterator[tuple[StudyRef, _Loaded]]:
        if self._pool is None:
            for ref in self._refs:
                yield ref, _load_one(str(ref.path))
            return
        pending: deque[tuple[StudyRef, Future]] = deque()
        todo = iter(self._refs)
        window = 2 * self._workers
        for ref in todo:
            pending.append((ref, self._pool.submit(_load_one, str(ref.path))))
            if len(pending) >= window:
                break
        while pending:
            ref, fut = pending.popleft()
            try:
                loaded = fut.result()
            except Exception as exc:  # a loader process that died (out of memory, ...)
                loaded = _Loaded(None, _error_message(exc), 0.0)
            del fut
            nxt = next(todo, None)  # keep the window full while the model works
            if nxt is not None:
                pending.append((nxt, self._pool.submit(_load_one, str(nxt.path))))
            yield ref, loaded

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# --- the batch ---------------------------------------------------------------------------------------


@dataclass
class BatchProgress:
    """Where a batch stands (given to the ``progress`` callable after each study).

    Attributes:
        done: Studies finished in this run (scored or error).
        total: Studies this run has to do (found minus skipped).
        skipped: Studies already in the file (resume).
        errors: Error studies in this run so far.
        study_id: The study just finished (None for the first call, before any).
        status: ``"ok"`` or ``"error"`` for that study.
        message: Its error message, if any.
        elapsed: Seconds since the run started.
        rate: Studies per second in this run (0 before the first).
        eta: Seconds left at that rate (None before the first study).
    """

    done: int
    total: int
    skipped: int
    errors: int
    study_id: str | None
    status: str | None
    message: str | None
    elapsed: float
    rate: float
    eta: float | None


@dataclass
class BatchSummary:
    """What a batch did.

    Attributes:
        csv: The results file.
        found: Studies found under the input folder.
        skipped: Already in the file (resume).
        scored: Scored in this run (status ok).
        errors: Error studies in this run.
        cancelled: True when ``cancel()`` (or an interrupt) stopped it early.
        seconds: Wall time.
        repaired: What the resume repaired at the file's end.
        warnings: Per-study problems that did not make the study an error (DICOM export of a
            raster study, a model without masks, ...), one line each.
        error_ids: Study ids that got error rows in this run.
        timings: Seconds the calling thread spent ``load_wait`` (waiting for a loaded study:
            high means loading is the bottleneck, more ``workers`` help), ``score``
            (:meth:`Engine.score`), ``outputs`` (heatmap/mask/JSON/DICOM files) and ``write``
            (CSV append + fsync).
    """

    csv: Path
    found: int = 0
    skipped: int = 0
    scored: int = 0
    errors: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    repaired: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error_ids: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(
        default_factory=lambda: {"load_wait": 0.0, "score": 0.0, "outputs": 0.0, "write": 0.0}
    )

    @property
    def done(self) -> int:
        """Studies finished in this run."""
        return self.scored + self.errors


def _write_outputs(
    ref: StudyRef,
    study: Study,
    result: Result,
    *,
    heatmaps_dir: Path | None,
    masks_dir: Path | None,
    json_dir: Path | None,
    dicom_dir: Path | None,
    warn: Callable[[str], None],
) -> None:
    if heatmaps_dir is not None:
        write_heatmaps(study, result, heatmaps_dir / ref.study_id)
    if masks_dir is not None:
        masks = lesion_masks(result)
        if masks:
            write_masks(study, masks, masks_dir / ref.study_id)
        else:
            warn(f"model {result.model} gives no lesion masks (it does not segment): no mask files written")
    if json_dir is not None:
        target = json_dir / f"{ref.study_id}.json"
        _atomic_write(target, (result.to_json() + "\n").encode("utf-8"))
    if dicom_dir is not None:
        from engine.dicom_export import export_study

        try:
            export_study(study, result, dicom_dir / ref.study_id)
        except MammoError as exc:
            warn(f"{ref.study_id}: no DICOM export: {_error_message(exc)}")


def run_batch(
    input_dir: str | Path,
    output_csv: str | Path,
    engine: Engine,
    *,
    resume: bool = False,
    overwrite: bool = False,
    retry_errors: bool = False,
    workers: int = 1,
    loader: LoaderKind = "thread",
    heatmaps_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    json_dir: str | Path | None = None,
    dicom_dir: str | Path | None = None,
    gradcam: bool | None = None,
    cancel: CancelFn | None = None,
    progress: ProgressFn | None = None,
) -> BatchSummary:
    """Score every study under ``input_dir`` into ``output_csv`` (module docstring for the rules).

    Args:
        input_dir: Folder of studies (:func:`find_studies`).
        output_csv: The results file.
        engine: The model to score with.
        resume: Continue an existing results file (repair its tail, skip its studies).
        overwrite: Replace an existing results file.
        retry_errors: With ``resume``, score the studies with error rows again.
        workers: Loaders working ahead of the model (0: load in this thread).
        loader: ``"thread"`` or ``"process"`` loaders.
        heatmaps_dir: Write 16-bit heatmap PNGs under this folder.
        masks_dir: Write lesion mask PNGs under this folder (models that segment).
        json_dir: Write each full result as JSON under this folder.
        dicom_dir: Write the DICOM SEG + SR export of each DICOM study under this folder.
        gradcam: Compute heatmaps; None = only when an output needs them.
        cancel: Polled before each study and during scoring; True stops the batch (the file
            stays valid and resumable; the study being scored gets no row).
        progress: Called with a :class:`BatchProgress` once before the first study and after
            each study.

    Returns:
        The :class:`BatchSummary`.

    Raises:
        StudyError: ``input_dir`` is not a folder.
        MammoError: The results file cannot be continued (see :class:`ResultsCsv`).
        OSError: The results file or an output cannot be written (the batch stops; the file
            stays valid).
    """
    t_start = time.perf_counter()
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    out_dirs = {
        name: (Path(d).expanduser() if d is not None else None)
        for name, d in (("heatmaps", heatmaps_dir), ("masks", masks_dir), ("json", json_dir), ("dicom", dicom_dir))
    }
    refs = find_studies(input_dir, exclude=[d for d in out_dirs.values() if d is not None])
    summary = BatchSummary(csv=Path(output_csv), found=len(refs))
    columns = engine_columns(engine)
    results = ResultsCsv(output_csv, columns, resume=resume, overwrite=overwrite, retry_errors=retry_errors)
    try:
        summary.repaired = list(results.repaired)
        other = {(r.get("model"), r.get("model_version")) for r in results.existing if r.get("status") != "error"}
        other.discard((engine.name, engine.version))
        if other:
            name, version = sorted(other)[0]
            raise MammoError(
                f"{Path(output_csv).name}: holds results of model {name} {version}; resume with that "
                f"model or write to a new file (this run uses {engine.name} {engine.version})"
            )
        todo = [r for r in refs if r.study_id not in results.done]
        summary.skipped = len(refs) - len(todo)
        if gradcam is None:
            gradcam = any(out_dirs[k] is not None for k in ("heatmaps", "json", "dicom"))
        _run(engine, results, todo, summary, out_dirs, gradcam, workers, loader, cancel, progress, t_start)
    finally:
        results.close()
        summary.seconds = time.perf_counter() - t_start
    return summary


def _run(
    engine: Engine,
    results: ResultsCsv,
    todo: list[StudyRef],
    summary: BatchSummary,
    out_dirs: dict[str, Path | None],
    gradcam: bool,
    workers: int,
    loader: LoaderKind,
    cancel: CancelFn | None,
    progress: ProgressFn | None,
    t_start: float,
) -> None:
    said: set[str] = set()

    def warn(message: str) -> None:
        if message not in said:  # model-level remarks once, per-study ones each
            said.add(message)
            summary.warnings.append(message)
            logger.warning("%s", message)

    def report(ref: StudyRef | None, status: str | None, message: str | None) -> None:
        if progress is None:
            return
        elapsed = time.perf_counter() - t_start
        done = summary.done
        rate = done / elapsed if done and elapsed > 0 else 0.0
        eta = (len(todo) - done) / rate if rate > 0 else None
        progress(BatchProgress(done, len(todo), summary.skipped, summary.errors,
                               ref.study_id if ref else None, status, message, elapsed, rate, eta))  # fmt: skip

    report(None, None, None)
    clock = summary.timings
    info = {"model": engine.name, "model_version": engine.version, "device": engine.device_name}
    prefetch = _Prefetcher(todo, workers, loader)
    try:
        items = iter(prefetch)
        while True:
            t0 = time.perf_counter()
            item = next(items, None)
            clock["load_wait"] += time.perf_counter() - t0
            if item is None:
                break
            ref, loaded = item
            del item
            if cancel is not None and cancel():
                summary.cancelled = True
                break
            t0 = time.perf_counter()
            if loaded.study is None:
                rows = error_rows(results.columns, study_id=ref.study_id, message=loaded.message or "cannot load",
                                  seconds=loaded.seconds, **info)  # fmt: skip
            else:
                study = loaded.study
                study.study_id = ref.study_id
                try:
                    result = engine.score(study, gradcam=gradcam, cancel=cancel)
                    t1 = time.perf_counter()
                    clock["score"] += t1 - t0
                    _write_outputs(ref, study, result, warn=warn, heatmaps_dir=out_dirs["heatmaps"],
                                   masks_dir=out_dirs["masks"], json_dir=out_dirs["json"],
                                   dicom_dir=out_dirs["dicom"])  # fmt: skip
                    clock["outputs"] += time.perf_counter() - t1
                except Cancelled:
                    summary.cancelled = True
                    break
                except OSError:
                    raise  # an output that cannot be written stops the batch
                except Exception as exc:  # batch boundary: one study never stops the batch
                    logger.debug("scoring %s failed", ref.study_id, exc_info=True)
                    rows = error_rows(results.columns, study_id=ref.study_id, message=_error_message(exc),
                                      seconds=loaded.seconds + time.perf_counter() - t0, **info)  # fmt: skip
                else:
                    rows = result_rows(result, results.columns, study_id=ref.study_id,
                                       seconds=loaded.seconds + time.perf_counter() - t0)  # fmt: skip
                    del result
                del study
            del loaded  # the study's pixels go before the next one arrives
            t0 = time.perf_counter()
            results.append(rows)
            clock["write"] += time.perf_counter() - t0
            status = rows[0]["status"]
            if status == "error":
                summary.errors += 1
                summary.error_ids.append(ref.study_id)
                report(ref, "error", rows[0]["error"])
            else:
                summary.scored += 1
                report(ref, "ok", None)
    except KeyboardInterrupt:
        summary.cancelled = True
        raise
    finally:
        prefetch.close()
