"""Write small synthetic mammography studies as real DICOM files for the viewer tests and bench.

Every image is built here with NumPy and pydicom (nothing downloaded). A view is a 12-bit
"mammogram": dark noisy air and a half-elliptical breast whose chest wall lies along the image's
right edge for a right breast and its left edge for a left breast (the usual storage convention),
an MLO pectoral triangle at the chest-wall top, and optionally a bright round lesion. File names
are deliberately not in slot order, so a test can check that slots are filled by the tags.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = [
    "SLOT_FILES",
    "breast_pixels",
    "mg_dataset",
    "write_study",
    "write_cesm_us",
    "lesion_center",
]

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"

#: File name of each slot: shuffled relative to the R-CC, L-CC, R-MLO, L-MLO order.
SLOT_FILES: dict[str, str] = {
    "L-MLO": "a_image.dcm",
    "R-CC": "b_image.dcm",
    "L-CC": "c_image.dcm",
    "R-MLO": "d_image.dcm",
}


def lesion_center(shape: tuple[int, int], side: str) -> tuple[int, int]:
    """``(row, col)`` of the test lesion: a third of the way into the breast from the chest wall."""
    rows, cols = shape
    col = int(cols * 0.72) if side == "R" else int(cols * 0.28)
    return int(rows * 0.45), col


def breast_pixels(
    shape: tuple[int, int],
    side: str,
    view: str,
    *,
    lesion: bool = False,
    seed: int = 0,
    mirrored: bool = False,
) -> np.ndarray:
    """A synthetic 12-bit mammogram ``(rows, cols)`` uint16.

    Args:
        shape: ``(rows, cols)``.
        side: ``"R"`` (chest wall at the right edge) or ``"L"`` (left edge).
        view: ``"CC"`` or ``"MLO"`` (MLO adds a pectoral triangle at the chest-wall top).
        lesion: Add a bright disc at :func:`lesion_center`.
        seed: Noise seed.
        mirrored: Store the image mirrored (chest wall on the unusual side).
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    wall = float(cols - 1) if side == "R" else 0.0
    cy = rows * (0.5 if view == "CC" else 0.55)
    r2 = ((yy - cy) / (0.44 * rows)) ** 2 + ((xx - wall) / (0.75 * cols)) ** 2
    img = 120.0 + rng.normal(0.0, 15.0, shape).astype(np.float32)
    breast = r2 <= 1.0
    texture = rng.normal(0.0, 60.0, shape).astype(np.float32)
    img[breast] = 1500.0 + 900.0 * np.sqrt(np.clip(1.0 - r2[breast], 0.0, 1.0)) + texture[breast]
    if view == "MLO":
        d = np.abs(xx - wall)
        pect = (d < 0.35 * cols * (1.0 - yy / (0.6 * rows))) & (yy < 0.6 * rows)
        img[pect] = 2900.0 + texture[pect]
    if lesion:
        lr, lc = lesion_center(shape, side)
        rad = max(3.0, 0.05 * min(rows, cols))
        disc = (yy - lr) ** 2 + (xx - lc) ** 2 <= rad**2
        img[disc] = 3800.0
    out = np.clip(img, 0, 4095).astype(np.uint16)
    return out[:, ::-1].copy() if mirrored else out


def mg_dataset(
    pixels: np.ndarray,
    side: str,
    view: str,
    *,
    spacing_mm: float | None = 0.1,
    windows: list[tuple[float, float]] | None = None,
    study_uid: str | None = None,
) -> Dataset:
    """A DX Mammography For Presentation dataset with laterality, view, spacing and VOI windows."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MG"
    ds.PatientName = "Synthetic^Viewer"
    ds.PatientID = "VIEWER-TEST"
    ds.ImageLaterality = side
    ds.ViewPosition = view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    if spacing_mm is not None:
        ds.PixelSpacing = [spacing_mm, spacing_mm]
        ds.PixelSpacingCalibrationType = "GEOMETRY"  # calibrated for the breast plane
    windows = windows if windows is not None else [(2300.0, 2600.0), (2600.0, 1400.0)]
    if windows:
        ds.WindowCenter = [w[0] for w in windows] if len(windows) > 1 else windows[0][0]
        ds.WindowWidth = [w[1] for w in windows] if len(windows) > 1 else windows[0][1]
        ds.VOILUTFunction = "LINEAR"
    return ds


def write_study(
    folder: Path,
    *,
    shape: tuple[int, int] = (320, 256),
    views: tuple[str, ...] = ("R-CC", "L-CC", "R-MLO", "L-MLO"),
    lesion_views: tuple[str, ...] = ("L-CC", "L-MLO"),
    mirrored_views: tuple[str, ...] = (),
    spacing_mm: float | None = 0.1,
    seed: int = 0,
) -> Path:
    """Write a four-view (or fewer) study; returns the folder.

    Args:
        folder: Study folder (created).
        shape: ``(rows, cols)`` of each image.
        views: Slots to write.
        lesion_views: Slots with a bright lesion.
        mirrored_views: Slots stored mirrored (chest wall on the unusual edge).
        spacing_mm: PixelSpacing, or None for an uncalibrated study.
        seed: Noise seed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for i, key in enumerate(views):
        side, view = key.split("-")
        px = breast_pixels(
            shape, side, view, lesion=key in lesion_views, seed=seed + i, mirrored=key in mirrored_views
        )
        ds = mg_dataset(px, side, view, spacing_mm=spacing_mm, study_uid=uid)
        ds.save_as(folder / SLOT_FILES[key], enforce_file_format=True)
    return folder


def write_cesm_us(folder: Path, *, shape: tuple[int, int] = (200, 160)) -> None:
    """Add a CESM pair (L-CC low energy + recombined) and one ultrasound image to a study."""
    import pydicom

    first = sorted(folder.glob("*.dcm"))
    uid = pydicom.dcmread(first[0], stop_before_pixels=True).StudyInstanceUID if first else generate_uid()
    for kind, img_type in (("low_energy", "LOW_ENERGY"), ("recombined", "ADDITION")):
        px = breast_pixels(shape, "L", "CC", lesion=kind == "recombined", seed=7)
        ds = mg_dataset(px, "L", "CC", study_uid=uid)
        values = ["ORIGINAL", "PRIMARY", "", "", ""]
        if img_type == "ADDITION":
            values[3] = "ADDITION"
        else:
            values[4] = "LOW_ENERGY"
        ds.ImageType = values
        ds.save_as(folder / f"cesm_{kind}.dcm", enforce_file_format=True)
    us = Dataset()
    us.file_meta = FileMetaDataset()
    us.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    us.file_meta.MediaStorageSOPClassUID = US_IMAGE
    us.SOPClassUID = US_IMAGE
    us.SOPInstanceUID = generate_uid()
    us.file_meta.MediaStorageSOPInstanceUID = us.SOPInstanceUID
    us.StudyInstanceUID = uid
    us.SeriesInstanceUID = generate_uid()
    us.Modality = "US"
    us.Laterality = "L"
    rng = np.random.default_rng(3)
    arr = np.clip(rng.rayleigh(40.0, (120, 160)), 0, 255).astype(np.uint8)
    us.set_pixel_data(arr, "MONOCHROME2", 8)
    us.save_as(folder / "us_left.dcm", enforce_file_format=True)
