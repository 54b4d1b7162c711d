"""Typed errors of the engine.

Every error is a :class:`MammoError`; ``str(err)`` is one human line that names the file (or the
model) and the problem. Errors are caught only at boundaries: the study loader (per file), batch
scoring (per study) and the viewer's worker (to the UI). Messages never contain patient names or IDs.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
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


class MammoError(Exception):
    """Base of every error the engine raises on purpose."""


class StudyError(MammoError):
    """A file or folder of a study cannot be used.

    Args:
        path: The offending file or folder.
        problem: What is wrong, in a few words (no patient data).
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path.name}: {problem}")

    def __reduce__(self):  # keep picklable for worker processes
        return (self.__class__, (self.path, self.problem))


class NotDicomError(StudyError):
    """The file is neither DICOM nor a supported raster image."""


class TruncatedFileError(StudyError):
    """The file ends before its pixel data does."""


class NoPixelDataError(StudyError):
    """A DICOM object without an image (a report, a presentation state, ...)."""


class UnsupportedPhotometricError(StudyError):
    """A PhotometricInterpretation the pipeline does not display."""


class MissingDecoderError(StudyError):
    """Compressed pixel data whose decoder plugin is not installed.

    Args:
        path: The file.
        problem: What is missing.
        package: The pip package that provides the decoder.
    """

    def __init__(self, path: str | Path, problem: str, package: str = "") -> None:
        self.package = package
        super().__init__(path, problem)

    def __reduce__(self):
        return (self.__class__, (self.path, self.problem, self.package))


class DecodeError(StudyError):
    """Pixel data present but not decodable."""


class NotBreastImageError(StudyError):
    """A valid image of another modality or body part (CT, chest X-ray, ...)."""


class EmptyStudyError(StudyError):
    """A folder with no loadable breast image."""


class ModelError(MammoError):
    """A model cannot be built, loaded or run."""


class UnknownModelError(ModelError):
    """No bundled model of that name."""


class WeightsMismatchError(ModelError):
    """Weights whose hash or architecture does not match the model card."""


class Cancelled(MammoError):
    """Work stopped because the caller's ``cancel()`` callable returned True.

    Not a :class:`StudyError`: a batch that catches study errors per study must let it through.

    Args:
        path: The study (or file) being worked on.
        problem: Where it stopped, in a few words.
    """

    def __init__(self, path: str | Path, problem: str = "cancelled") -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path.name}: {problem}")

    def __reduce__(self):
        return (self.__class__, (self.path, self.problem))
