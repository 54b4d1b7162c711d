"""mammo-viewer engine: everything needed to score a study, no Qt.

Public API (the viewer and the command-line tools use only these names)::

    study = engine.load_study(path)
    result = engine.Engine(model="hybrid-vssm-shared", device="auto").score(study)
    result.sides["L"].p_malignant, result.attention["L-CC"], result.heatmaps["L-CC"]
    engine.list_models()

Importing ``engine`` is cheap: heavy modules (torch, the models) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import (
    Cancelled,
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
    from engine.inference import CamTarget, Engine
    from engine.io.loader import load_study
    from engine.result import Result, SideResult
    from engine.weights import ModelCard, list_models

__all__ = [
    "load_study",
    "Engine",
    "CamTarget",
    "Result",
    "SideResult",
    "list_models",
    "ModelCard",
    "run_batch",
    "read_results",
    "BatchProgress",
    "BatchSummary",
    "export_study",
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
    "Cancelled",
]

_LAZY = {
    "load_study": ("engine.io.loader", "load_study"),
    "Engine": ("engine.inference", "Engine"),
    "CamTarget": ("engine.inference", "CamTarget"),
    "Result": ("engine.result", "Result"),
    "SideResult": ("engine.result", "SideResult"),
    "list_models": ("engine.weights", "list_models"),
    "ModelCard": ("engine.weights", "ModelCard"),
    "run_batch": ("engine.batch", "run_batch"),
    "read_results": ("engine.batch", "read_results"),
    "BatchProgress": ("engine.batch", "BatchProgress"),
    "BatchSummary": ("engine.batch", "BatchSummary"),
    "export_study": ("engine.dicom_export", "export_study"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
