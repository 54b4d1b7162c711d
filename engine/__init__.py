"""mammo-viewer engine: everything needed to score a study, no Qt.

Public API (the viewer and the command-line tools use only these names)::

    study = engine.load_study(path)

Importing ``engine`` is cheap: heavy modules (torch, the models) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import (
    DecodeError,
    EmptyStudyError,
    MammoError,
    MissingDecoderError,
    ModelError,
    NoPixelDataError,
    NotBreastImageError,
    NotDicomError,
    StudyError,
    TruncatedFileError,
    UnknownModelError,
    UnsupportedPhotometricError,
    WeightsMismatchError,
)
from engine.study import STANDARD_VIEWS, ExtraImage, FileError, Study, StudyImage, VoiLut, VoiWindow

if TYPE_CHECKING:
    from engine.io.loader import load_study

__all__ = [
    "load_study",
    "STANDARD_VIEWS",
    "Study",
    "StudyImage",
    "ExtraImage",
    "FileError",
    "VoiWindow",
    "VoiLut",
    "MammoError",
    "StudyError",
    "NotDicomError",
    "TruncatedFileError",
    "NoPixelDataError",
    "UnsupportedPhotometricError",
    "MissingDecoderError",
    "DecodeError",
    "NotBreastImageError",
    "EmptyStudyError",
    "ModelError",
    "UnknownModelError",
    "WeightsMismatchError",
]

_LAZY = {
    "load_study": ("engine.io.loader", "load_study"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
