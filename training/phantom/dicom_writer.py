"""Write phantom images as standard DICOM files (pydicom 3).

- MG and CESM: Digital Mammography X-Ray Image Storage - For Presentation
  (1.2.840.10008.5.1.4.1.1.1.2), Modality MG, 16 bits allocated / 14 stored, ImageLaterality,
  ViewPosition and View Code Sequence (SNOMED CT: CC 399162004, MLO 399368009),
  PatientOrientation, PixelSpacing (breast plane, calibration type GEOMETRY) with
  ImagerPixelSpacing and EstimatedRadiographicMagnificationFactor, Rescale 1/0, two VOI windows
  (``NORMAL``, ``DENSE``; CESM recombined: ``RECOMBINED``, ``NARROW``) with VOILUTFunction
  LINEAR or SIGMOID, MONOCHROME2 with PresentationLUTShape IDENTITY or MONOCHROME1 with
  INVERSE (stored values inverted and the windows mirrored, so the displayed image is the same:
  for DX/MG the INVERSE shape restates the MONOCHROME1 inversion, it is not a second one),
  uncompressed or RLE Lossless. CESM: ImageType ``ORIGINAL\\PRIMARY\\\\\\LOW_ENERGY`` or
  ``DERIVED\\PRIMARY\\\\SUBTRACTION``.
- US: Ultrasound Image Storage (1.2.840.10008.5.1.4.1.1.6.1), Modality US, MONOCHROME2 8-bit,
  Sequence of Ultrasound Regions with PhysicalDeltaX/Y in cm (units code 3), ImageLaterality and
  series Laterality.

Every UID is ``pydicom.uid.generate_uid(entropy_srcs=[...])`` of the dataset seed, the study id
and the object's role, and every date comes from the plan, so the same seed writes
byte-identical files. Patient names are ``PHANTOM^<study_id>``; nothing refers to a real person.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from training.phantom.geometry import MAGNIFICATION
from training.phantom.plan import StudyPlan
from training.phantom.render import MAX_VALUE, RenderedImage

__all__ = [
    "MG_FOR_PRESENTATION",
    "US_IMAGE_STORAGE",
    "VIEW_CODES",
    "phantom_uid",
    "build_dataset",
    "write_dicom",
    "series_info",
]

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
#: SNOMED CT view codes (CID 4014).
VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}
_ORIENTATION = {
    ("L", "CC"): ["A", "R"],
    ("R", "CC"): ["P", "L"],
    ("L", "MLO"): ["A", "F"],
    ("R", "MLO"): ["P", "F"],
}
_SOFTWARE = "mammo-viewer training.phantom 1"


def phantom_uid(plan: StudyPlan, *parts: object) -> str:
    """A UID that depends only on the dataset seed, the study id and ``parts``."""
    return generate_uid(entropy_srcs=["mammo-phantom", str(plan.seed), plan.study_id, *map(str, parts)])


def series_info(image: RenderedImage) -> tuple[str, int, str]:
    """``(series key, SeriesNumber, SeriesDescription)`` of an image."""
    if image.modality == "MG":
        return "MG", 1, "Screening mammography"
    if image.modality == "US":
        return f"US_{image.side}", 2 if image.side == "R" else 3, f"Breast ultrasound {image.side}"
    if image.kind == "low_energy":
        return "CESM_LE", 4, "CESM low energy"
    return "CESM_RC", 5, "CESM recombined"


def _acquired(plan: StudyPlan, image: RenderedImage, instance: int) -> _dt.datetime:
    # CESM is dated before the mammograms: a reader that mistook it for a duplicate MG view and
    # kept the newest would still keep the screening image
    offset = {"MG": 0, "US": 20 * 60, "CESM": -45 * 60}[image.modality]
    return plan.acquired + _dt.timedelta(seconds=offset + 40 * instance)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    return item


def _common(ds: Dataset, plan: StudyPlan, image: RenderedImage, instance: int) -> None:
    when = _acquired(plan, image, instance)
    study_day = plan.acquired.strftime("%Y%m%d")
    key, number, description = series_info(image)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate = study_day
    ds.StudyTime = plan.acquired.strftime("%H%M%S")
    ds.SeriesDate = when.strftime("%Y%m%d")
    ds.SeriesTime = when.strftime("%H%M%S")
    ds.AcquisitionDate = when.strftime("%Y%m%d")
    ds.AcquisitionTime = when.strftime("%H%M%S")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.Modality = "US" if image.modality == "US" else "MG"
    ds.Manufacturer = "mammo-viewer"
    ds.ManufacturerModelName = "synthetic phantom"
    ds.SoftwareVersions = _SOFTWARE
    ds.InstitutionName = "Synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Screening mammography (synthetic phantom)"
    ds.SeriesDescription = description
    ds.PatientName = f"PHANTOM^{plan.study_id}"
    ds.PatientID = f"PH{plan.seed}-{plan.study_id}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientAge = f"{plan.age:03d}Y"
    ds.PatientIdentityRemoved = "NO"
    ds.StudyInstanceUID = phantom_uid(plan, "study")
    ds.SeriesInstanceUID = phantom_uid(plan, "series", key)
    ds.StudyID = "1"
    ds.SeriesNumber = number
    ds.InstanceNumber = instance
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = image.side
    ds.ImageComments = "Synthetic phantom image (training.phantom), not a patient image"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = (int(v) for v in image.pixels.shape)
    ds.PixelRepresentation = 0


def _windows_for(plan: StudyPlan, image: RenderedImage) -> tuple[list[float], list[float], list[str]]:
    centers, widths, names = [], [], []
    for c, w, name in image.windows:
        if plan.photometric == "MONOCHROME1":
            # mirror the window so VOI then inversion shows the same picture
            c = (MAX_VALUE + 1 - c) if plan.voi_function == "LINEAR" else (MAX_VALUE - c)
        centers.append(float(c))
        widths.append(float(w))
        names.append(name)
    return centers, widths, names


def _mg(ds: Dataset, plan: StudyPlan, image: RenderedImage) -> np.ndarray:
    view = image.view or "CC"
    if image.kind == "low_energy":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "", "", "LOW_ENERGY"]
    elif image.kind == "recombined":
        ds.ImageType = ["DERIVED", "PRIMARY", "", "SUBTRACTION"]
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.ViewPosition = view
    ds.PatientOrientation = _ORIENTATION[(image.side, view)]
    ds.ViewCodeSequence = Sequence([_code(*VIEW_CODES[view])])
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = Sequence([])
    ds.AnatomicRegionSequence = Sequence([_code("76752008", "Breast")])
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.OrganExposed = "BREAST"
    ds.DetectorType = "DIRECT"
    meta = image.meta
    ds.KVP = meta.get("kvp", 28.0)
    ds.BodyPartThickness = meta.get("thickness_mm", 50.0)
    ds.CompressionForce = meta.get("compression_n", 100.0)
    ds.Exposure = int(round(meta.get("mas", 60.0)))
    ds.PositionerPrimaryAngle = meta.get("angle_deg", 0.0)
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = "COPPER" if image.kind == "recombined" else "RHODIUM"
    sp = float(image.spacing_mm[0])
    ds.PixelSpacing = [round(sp, 6), round(float(image.spacing_mm[1]), 6)]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "Breast plane, estimated magnification"
    ds.ImagerPixelSpacing = [round(sp * MAGNIFICATION, 6), round(float(image.spacing_mm[1]) * MAGNIFICATION, 6)]
    ds.EstimatedRadiographicMagnificationFactor = MAGNIFICATION
    ds.BitsAllocated = 16
    ds.BitsStored = 14
    ds.HighBit = 13
    ds.PhotometricInterpretation = plan.photometric
    ds.PixelIntensityRelationship = "LOG"
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    centers, widths, names = _windows_for(plan, image)
    ds.WindowCenter = centers
    ds.WindowWidth = widths
    ds.WindowCenterWidthExplanation = names
    ds.VOILUTFunction = plan.voi_function
    ds.QualityControlImage = "NO"
    pixels = image.pixels.astype(np.uint16, copy=False)
    if plan.photometric == "MONOCHROME1":
        ds.PresentationLUTShape = "INVERSE"
        ds.PixelIntensityRelationshipSign = 1
        pixels = (MAX_VALUE - pixels.astype(np.int32)).astype(np.uint16)
    else:
        ds.PresentationLUTShape = "IDENTITY"
        ds.PixelIntensityRelationshipSign = -1
    return pixels


def _us(ds: Dataset, plan: StudyPlan, image: RenderedImage) -> np.ndarray:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "BREAST", "0001"]
    ds.SOPClassUID = US_IMAGE_STORAGE
    ds.Laterality = image.side
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.AnatomicRegionSequence = Sequence([_code("76752008", "Breast")])
    rows, cols = image.pixels.shape
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0 = 0
    region.RegionLocationMinY0 = 0
    region.RegionLocationMaxX1 = cols - 1
    region.RegionLocationMaxY1 = rows - 1
    region.ReferencePixelX0 = 0
    region.ReferencePixelY0 = 0
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.ReferencePixelPhysicalValueX = 0.0
    region.ReferencePixelPhysicalValueY = 0.0
    region.PhysicalDeltaX = float(image.spacing_mm[1]) / 10.0
    region.PhysicalDeltaY = float(image.spacing_mm[0]) / 10.0
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.TransducerType = "LINEAR"
    meta = image.meta
    where = f"{image.side} breast"
    if "clock" in meta:
        where += f", {meta['clock']} o'clock, {meta['distance_cm']} cm from nipple"
    ds.ImageComments = f"Synthetic phantom image (training.phantom), not a patient image; {where}"
    return image.pixels.astype(np.uint8, copy=False)


def build_dataset(plan: StudyPlan, image: RenderedImage, instance: int) -> FileDataset:
    """The DICOM dataset of one image (pixel data included, uncompressed).

    Args:
        plan: The study.
        image: The rendered image.
        instance: InstanceNumber within its series (1-based).

    Returns:
        A :class:`~pydicom.dataset.FileDataset` with file meta.
    """
    return _build(plan, image, instance)[0]


def _build(plan: StudyPlan, image: RenderedImage, instance: int) -> tuple[FileDataset, np.ndarray]:
    sop_uid = phantom_uid(plan, "image", image.stem)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE if image.modality == "US" else MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MAMMOPHANTOM1"
    ds = FileDataset(f"{image.stem}.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    _common(ds, plan, image, instance)
    pixels = _us(ds, plan, image) if image.modality == "US" else _mg(ds, plan, image)
    ds.SOPInstanceUID = sop_uid
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OB" if image.modality == "US" else "OW"
    return ds, pixels


def write_dicom(path: str | Path, plan: StudyPlan, image: RenderedImage, instance: int) -> Path:
    """Write one image to ``path`` (RLE Lossless when the plan asks for it, MG/CESM only).

    Returns:
        The path written.
    """
    path = Path(path)
    ds, pixels = _build(plan, image, instance)
    if plan.rle and image.modality != "US":
        ds.compress(RLELossless, pixels, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path
