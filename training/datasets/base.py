"""The sample interface every dataset adapter returns (SPEC section 7), and the adapter base class.

One :class:`StudySample` per study (one screening exam; one image for image-level datasets such
as mini-MIAS and BUSI):

- ``images``: the standard mammography views the study has, keyed by the engine's view keys
  ``"R-CC"``, ``"L-CC"``, ``"R-MLO"``, ``"L-MLO"`` (:data:`engine.study.STANDARD_VIEWS`); missing
  views are simply absent.
- ``extras``: every other image as a :class:`SampleImage` (ultrasound, CESM low-energy and
  recombined images, mammograms whose side or view is unknown or non-standard).
- ``labels``: per breast side (``"L"``, ``"R"``, or ``"U"`` when the dataset does not say which
  breast an image shows) the labels the dataset has, as :class:`BreastLabels`. A label the dataset
  does not have is ``None``: adapters never guess one.

Coordinates of lesions are in the original pixel grid of the image they belong to, with the
origin at the top-left pixel: ``x`` = column, ``y`` = row (the engine's convention).

Errors: an adapter whose files are not in the published layout raises :class:`DatasetLayoutError`
(a missing file or column) or :class:`DatasetLabelError` (a value it cannot read), both
:class:`engine.errors.MammoError`; ``str(err)`` is one line naming the file (no patient data).
"""

from __future__ import annotations

import abc
import csv
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from engine.errors import MammoError
from engine.study import STANDARD_VIEWS

__all__ = [
    "SIDES",
    "UNKNOWN_SIDE",
    "PATHOLOGIES",
    "DENSITIES",
    "Pathology",
    "DatasetError",
    "DatasetLayoutError",
    "DatasetLabelError",
    "Lesion",
    "BreastLabels",
    "SampleImage",
    "StudySample",
    "DatasetAdapter",
    "worst_pathology",
    "pathology_rank",
    "read_table",
    "find_table",
    "normalise_density",
    "parse_birads",
    "parse_age",
]

logger = logging.getLogger(__name__)

#: Breast sides used as keys of :attr:`StudySample.labels`.
SIDES: tuple[str, ...] = ("R", "L")
#: The side key of images whose breast the dataset does not identify (mini-MIAS, BUSI).
UNKNOWN_SIDE = "U"
#: Pathology values, from least to most severe.
PATHOLOGIES: tuple[str, ...] = ("normal", "benign", "malignant")
#: ACR breast density categories.
DENSITIES: tuple[str, ...] = ("A", "B", "C", "D")

Pathology = Literal["normal", "benign", "malignant"]


# --- errors --------------------------------------------------------------------------------------


class DatasetError(MammoError):
    """A dataset folder cannot be read as its adapter expects.

    Args:
        path: The offending file or folder.
        problem: What is wrong, in a few words (no patient data).
        root: The dataset root; when given, the message names ``path`` relative to it.
    """

    def __init__(self, path: str | Path, problem: str, root: str | Path | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.root = Path(root) if root is not None else None
        shown = self.path.name or str(self.path)
        if self.root is not None:
            try:
                shown = self.path.relative_to(self.root).as_posix() or self.path.name
            except ValueError:
                pass
        super().__init__(f"{shown}: {problem}")

    def __reduce__(self):
        return (self.__class__, (self.path, self.problem, self.root))


class DatasetLayoutError(DatasetError):
    """A file, folder or column the published layout has is missing."""


class DatasetLabelError(DatasetError):
    """A label value the adapter cannot interpret."""


# --- labels --------------------------------------------------------------------------------------


def pathology_rank(pathology: str | None) -> int:
    """``normal`` 0, ``benign`` 1, ``malignant`` 2, unknown -1."""
    return PATHOLOGIES.index(pathology) if pathology in PATHOLOGIES else -1


def worst_pathology(values: Iterable[str | None]) -> str | None:
    """The most severe known pathology of ``values`` (None when none is known)."""
    best = -1
    for v in values:
        best = max(best, pathology_rank(v))
    return PATHOLOGIES[best] if best >= 0 else None


@dataclass(frozen=True)
class Lesion:
    """One annotated finding in one image.

    Every geometric field is optional: datasets give a box (VinDr-Mammo), a circle (mini-MIAS), a
    polygon (TOMPEI-CMMD, CDD-CESM) or a mask file (CBIS-DDSM, BUSI, the phantom).

    Attributes:
        image: The image the geometry refers to.
        view: Its standard view key (``"L-MLO"``, ...), or None (unknown side, US, ...).
        box: ``(x_min, y_min, x_max, y_max)`` in pixels.
        centre: ``(x, y)`` in pixels.
        radius: Radius in pixels of a circle enclosing the finding.
        polygon: Outline ``((x, y), ...)`` in pixels (closed implicitly).
        masks: Mask files (PNG or DICOM); their union is the lesion.
        finding: Kind of finding in lower case (``mass``, ``calcification``, ``distortion``,
            ``asymmetry``, ``cyst``, ... or the dataset's own category).
        pathology: ``benign``/``malignant`` when known per lesion, else None.
        birads: BI-RADS category of this finding, when the dataset gives one.
    """

    image: Path | None = None
    view: str | None = None
    box: tuple[float, float, float, float] | None = None
    centre: tuple[float, float] | None = None
    radius: float | None = None
    polygon: tuple[tuple[float, float], ...] | None = None
    masks: tuple[Path, ...] = ()
    finding: str | None = None
    pathology: str | None = None
    birads: int | None = None

    def bounding_box(self) -> tuple[float, float, float, float] | None:
        """``box``, or the box around ``polygon``, or around the circle; None without geometry."""
        if self.box is not None:
            return self.box
        if self.polygon:
            xs = [p[0] for p in self.polygon]
            ys = [p[1] for p in self.polygon]
            return (min(xs), min(ys), max(xs), max(ys))
        if self.centre is not None and self.radius is not None:
            x, y = self.centre
            r = self.radius
            return (x - r, y - r, x + r, y + r)
        return None


@dataclass(frozen=True)
class BreastLabels:
    """The labels of one breast (or of one image of unknown side). None = the dataset lacks it.

    Attributes:
        pathology: ``"normal"``, ``"benign"``, ``"malignant"`` or None.
        birads: BI-RADS assessment 0-6 or None.
        density: ACR density ``"A"``-``"D"`` or None.
        age: Age in years at the exam, or None.
        finding: Kind(s) of finding, ``"none"`` for a normal breast, several joined by ``;``.
        lesions: Annotated findings in this breast's images.
        attributes: Other dataset-specific facts, as strings (subtype, exclusion reason, ...).
    """

    pathology: str | None = None
    birads: int | None = None
    density: str | None = None
    age: float | None = None
    finding: str | None = None
    lesions: tuple[Lesion, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pathology is not None and self.pathology not in PATHOLOGIES:
            raise ValueError(f"pathology must be one of {PATHOLOGIES} or None, got {self.pathology!r}")
        if self.density is not None and self.density not in DENSITIES:
            raise ValueError(f"density must be one of {DENSITIES} or None, got {self.density!r}")
        if self.birads is not None and not 0 <= self.birads <= 6:
            raise ValueError(f"BI-RADS must be 0-6 or None, got {self.birads!r}")

    @property
    def malignant(self) -> int:
        """1 malignant, 0 normal or benign, -1 unknown (the label the loss and metrics ignore)."""
        if self.pathology is None:
            return -1
        return 1 if self.pathology == "malignant" else 0

    @property
    def pathology_index(self) -> int:
        """0 normal, 1 benign, 2 malignant, -1 unknown."""
        return pathology_rank(self.pathology)


@dataclass(frozen=True)
class SampleImage:
    """An image outside the four standard slots.

    Attributes:
        path: The file.
        kind: ``"MG"``, ``"US"`` or ``"CESM"``.
        side: ``"L"``, ``"R"`` or None when unknown.
        view: ``"CC"``, ``"MLO"``, another view code, or None.
        cesm_kind: ``"low_energy"`` or ``"recombined"`` for CESM, else None.
        note: Why it is here, when not obvious (``"side unknown"``, ``"duplicate view"``, ...).
    """

    path: Path
    kind: Literal["MG", "US", "CESM"] = "MG"
    side: str | None = None
    view: str | None = None
    cesm_kind: str | None = None
    note: str = ""

    @property
    def key(self) -> str | None:
        """``"L-CC"`` style key when side and view are standard, else None."""
        if self.side in SIDES and self.view in ("CC", "MLO"):
            return f"{self.side}-{self.view}"
        return None


@dataclass(frozen=True)
class StudySample:
    """One study (or one image, for image-level datasets) with the labels of its breasts.

    Attributes:
        dataset: Adapter name (``"cmmd"``, ``"vindr"``, ...).
        study_id: Unique within the dataset.
        patient_id: Splits never put one patient on two sides (for datasets without patient ids:
            the study, or the woman for mini-MIAS pairs; see each adapter).
        images: Standard views ``{"R-CC": path, ...}`` the study has.
        labels: ``{"L": BreastLabels, "R": ...}``; ``"U"`` for an image of unknown side. A breast
            the dataset says nothing about has no entry.
        extras: Other images (US, CESM, MG of unknown side or non-standard view).
        group_id: Samples that share it stay in one split fold even across patients (BUSI
            near-duplicate images); None when the dataset has no such groups.
        split: The dataset's official split (``"training"``, ``"test"``) when it has one.
    """

    dataset: str
    study_id: str
    patient_id: str
    images: Mapping[str, Path] = field(default_factory=dict)
    labels: Mapping[str, BreastLabels] = field(default_factory=dict)
    extras: tuple[SampleImage, ...] = ()
    group_id: str | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        bad = [k for k in self.images if k not in STANDARD_VIEWS]
        if bad:
            raise ValueError(f"images keys must be standard views {STANDARD_VIEWS}, got {bad}")
        bad = [k for k in self.labels if k not in (*SIDES, UNKNOWN_SIDE)]
        if bad:
            raise ValueError(f"labels keys must be 'L', 'R' or 'U', got {bad}")

    @property
    def missing(self) -> list[str]:
        """Standard views the study lacks, in :data:`STANDARD_VIEWS` order."""
        return [k for k in STANDARD_VIEWS if k not in self.images]

    def malignant(self, side: str) -> int:
        """1 malignant, 0 normal/benign, -1 unknown or no label for ``side``."""
        lab = self.labels.get(side)
        return lab.malignant if lab is not None else -1

    def worst_pathology(self) -> str | None:
        """The most severe known pathology over all breasts (the patient-level label)."""
        return worst_pathology(lab.pathology for lab in self.labels.values())

    @property
    def ultrasound(self) -> tuple[SampleImage, ...]:
        """The ultrasound images."""
        return tuple(e for e in self.extras if e.kind == "US")

    @property
    def cesm(self) -> dict[tuple[str, str], Path]:
        """CESM images keyed ``(view key, "low_energy" | "recombined")``."""
        out: dict[tuple[str, str], Path] = {}
        for e in self.extras:
            if e.kind == "CESM" and e.key is not None and e.cesm_kind:
                out.setdefault((e.key, e.cesm_kind), e.path)
        return out

    def side_images(self, side: str) -> list[Path]:
        """Every mammogram (standard view or extra MG) of ``side`` (``"U"``: those of unknown side)."""
        if side == UNKNOWN_SIDE:
            return [e.path for e in self.extras if e.kind == "MG" and e.side is None]
        paths = [self.images[k] for k in STANDARD_VIEWS if k in self.images and k.startswith(side)]
        return paths + [e.path for e in self.extras if e.kind == "MG" and e.side == side]

    def all_paths(self) -> list[Path]:
        """Every image file of the sample."""
        return [self.images[k] for k in STANDARD_VIEWS if k in self.images] + [e.path for e in self.extras]


# --- adapters ------------------------------------------------------------------------------------


class DatasetAdapter(abc.ABC):
    """Reads one public dataset from its published on-disk layout.

    Subclasses set ``name``, ``citation``, ``licence`` and ``url`` and implement :meth:`_load`.

    Args:
        root: The dataset's top folder (as downloaded; each adapter documents what it expects).

    Raises:
        DatasetLayoutError: ``root`` is not a folder.
    """

    name: str = ""
    citation: str = ""
    licence: str = ""
    url: str = ""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DatasetLayoutError(self.root, f"{self.name or 'dataset'} folder not found")
        self._samples: list[StudySample] | None = None

    @abc.abstractmethod
    def _load(self) -> list[StudySample]:
        """Read the layout; called once by :meth:`samples`."""

    def samples(self) -> list[StudySample]:
        """Every sample, in a stable order (read once, then cached)."""
        if self._samples is None:
            self._samples = self._load()
            logger.info("%s: %d samples from %s", self.name, len(self._samples), self.root)
        return list(self._samples)

    def __len__(self) -> int:
        return len(self.samples())

    def __iter__(self) -> Iterator[StudySample]:
        return iter(self.samples())

    def describe(self) -> dict:
        """Counts for logs and model cards: samples, patients, views, per-breast label mix."""
        samples = self.samples()
        breasts = [lab for s in samples for lab in s.labels.values()]
        return {
            "dataset": self.name,
            "samples": len(samples),
            "patients": len({s.patient_id for s in samples}),
            "views": dict(Counter(k for s in samples for k in s.images)),
            "extras": dict(Counter(e.kind for s in samples for e in s.extras)),
            "pathology": dict(Counter(str(b.pathology) for b in breasts)),
            "birads": dict(Counter(str(b.birads) for b in breasts)),
            "density": dict(Counter(str(b.density) for b in breasts)),
        }

    def _error(self, path: Path, problem: str, kind: type[DatasetError] | None = None) -> DatasetError:
        """A :class:`DatasetLayoutError` (or ``kind``) naming ``path`` relative to the root."""
        return (kind or DatasetLayoutError)(path, problem, root=self.root)

    def _require(self, path: Path, what: str) -> Path:
        """``path`` if it exists, else a :class:`DatasetLayoutError` naming it."""
        if not path.exists():
            raise self._error(path, f"{what} not found (expected in the {self.name} layout)")
        return path


# --- tables --------------------------------------------------------------------------------------


def find_table(root: Path, stems: Sequence[str]) -> Path | None:
    """The first of ``<stem>.xlsx`` / ``<stem>.csv`` that exists under ``root`` (xlsx first when
    openpyxl is installed, CSV first otherwise); None when none does."""
    try:
        import openpyxl  # noqa: F401

        suffixes = (".xlsx", ".csv")
    except Exception:
        suffixes = (".csv", ".xlsx")
    for stem in stems:
        for suffix in suffixes:
            p = root / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def read_table(
    path: Path,
    *,
    sheet: str | int | None = None,
    header_rows: int = 1,
    root: Path | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Read a CSV file or one sheet of an ``.xlsx`` workbook as text cells.

    ``.xlsx`` needs openpyxl (optional: ``pip install openpyxl``); without it a
    :class:`DatasetLayoutError` asks for it or for a CSV export of the sheet, which every adapter
    accepts in the workbook's place (same name, ``.csv``).

    Args:
        path: The table.
        sheet: Sheet name or index for ``.xlsx`` (default: the first sheet).
        header_rows: Rows above the data; the last of them names the columns (0: no header).
        root: Dataset root, to name the file relative to it in errors.

    Returns:
        ``(header, rows)``: column names (stripped) and data rows as stripped strings, padded to
        the header's width; fully empty rows are dropped. Floats that are whole numbers read from
        ``.xlsx`` become ``"3"``, not ``"3.0"``.

    Raises:
        DatasetLayoutError: Missing file or sheet, or ``.xlsx`` without openpyxl.
    """
    if not path.is_file():
        raise DatasetLayoutError(path, "table not found", root=root)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        raw = _read_xlsx(path, sheet, root)
    else:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
            fh.seek(0)
            delimiter = max((",", ";", "\t"), key=first.count)  # ties keep ","
            raw = [list(r) for r in csv.reader(fh, delimiter=delimiter)]
    raw = [[_cell(c) for c in r] for r in raw]
    header = [c.strip() for c in raw[header_rows - 1]] if header_rows > 0 and len(raw) >= header_rows else []
    rows = []
    for r in raw[max(header_rows, 0):]:
        if not any(c for c in r):
            continue
        if len(r) < len(header):
            r = r + [""] * (len(header) - len(r))
        rows.append(r)
    return header, rows


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value).strip()


def _read_xlsx(path: Path, sheet: str | int | None, root: Path | None) -> list[list[object]]:
    try:
        import openpyxl
    except Exception as exc:
        raise DatasetLayoutError(
            path,
            f"reading .xlsx needs openpyxl ({type(exc).__name__}); pip install openpyxl, "
            "or put a CSV export of the sheet beside it with the same name",
            root=root,
        ) from exc
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        if sheet is None:
            ws = wb.worksheets[0]
        elif isinstance(sheet, int):
            ws = wb.worksheets[sheet]
        else:
            if sheet not in wb.sheetnames:
                raise DatasetLayoutError(path, f"no sheet named {sheet!r}", root=root)
            ws = wb[sheet]
        return [list(r) for r in ws.iter_rows(values_only=True)]
    finally:
        wb.close()


# --- value parsing -------------------------------------------------------------------------------

_DENSITY_WORDS = (
    ("extremely", "D"),
    ("heterogeneous", "C"),
    ("scattered", "B"),
    ("fatty", "A"),
    ("almost entirely fat", "A"),
)


def normalise_density(value: str | None) -> str | None:
    """ACR density from ``"A"``-``"D"``, ``"1"``-``"4"``, ``"DENSITY C"`` or the atlas words
    (fatty / scattered / heterogeneously dense / extremely dense); None when empty or ``"_"``.

    Raises:
        ValueError: Any other text.
    """
    if value is None:
        return None
    v = str(value).strip()
    if v in ("", "_", "-", "nan", "NaN", "None"):
        return None
    low = v.lower()
    for word, cat in _DENSITY_WORDS:
        if word in low:
            return cat
    token = v.split()[-1].upper()
    if token in DENSITIES:
        return token
    if token.endswith(".0"):
        token = token[:-2]
    if token in ("1", "2", "3", "4"):
        return DENSITIES[int(token) - 1]
    raise ValueError(f"unknown breast density {value!r}")


def parse_birads(value: str | None) -> int | None:
    """BI-RADS from ``"4"``, ``"4.0"``, ``"BI-RADS 4"``, ``"4a"``/``"4B"`` (-> 4) or ``"3$4"``
    (several findings: the highest); None when empty.

    Raises:
        ValueError: No category 0-6 in the text.
    """
    if value is None:
        return None
    v = str(value).strip()
    if v in ("", "_", "-", "nan", "NaN", "None"):
        return None
    best = None
    for part in v.replace("$", " ").replace(",", " ").split():
        p = part.strip().upper().removeprefix("BI-RADS").removeprefix("BIRADS")
        if not p:
            continue
        if p.endswith(".0"):
            p = p[:-2]
        if p[0].isdigit() and int(p[0]) <= 6 and (len(p) == 1 or p[1:] in ("A", "B", "C")):
            best = int(p[0]) if best is None else max(best, int(p[0]))
    if best is None:
        raise ValueError(f"unknown BI-RADS value {value!r}")
    return best


def parse_age(value: str | None) -> float | None:
    """Age in years from ``"56"``, ``"56.0"`` or a DICOM AS string (``"056Y"``, ``"006M"``)."""
    if value is None:
        return None
    v = str(value).strip().upper()
    if v in ("", "_", "-", "NAN", "NONE"):
        return None
    unit = 1.0
    if v[-1:] in ("Y", "M", "W", "D"):
        unit = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}[v[-1]]
        v = v[:-1]
    try:
        years = float(v) * unit
    except ValueError:
        raise ValueError(f"unknown age {value!r}") from None
    return years if years > 0 else None
