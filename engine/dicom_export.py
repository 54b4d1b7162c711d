"""DICOM export of a scored study that a PACS takes: Segmentation objects and a Comprehensive SR.

:func:`export_study` writes, into one folder:

- ``seg_<view>.dcm`` (e.g. ``seg_L-CC.dcm``): a DICOM Segmentation (FRACTIONAL, PROBABILITY, 8-bit,
  ``MaximumFractionalValue`` 255) holding that view's Grad-CAM heatmap as one segment, pixel for
  pixel on the source mammogram, referencing it by SOP Instance UID (one SEG per view: mammograms
  have no patient coordinate system, and a Segmentation whose source images lack one can only
  reference a single source frame; the four views are one SEG series).
- ``seg_lesions_<view>.dcm``: a BINARY Segmentation of the lesion masks, when the model segments
  (:func:`engine.batch.lesion_masks`).
- ``sr.dcm``: a Comprehensive SR, TID 1500 Measurement Report: per breast a TID 1501 group (finding
  site left/right breast) with "Probability of cancer" (DCM 111047, unit ``1``) and the BI-RADS
  estimate as "Assessment Category" (DCM 111005, SNOMED CT mammography assessment codes), the
  model as algorithm; and per lesion outline (``result.contours``) a TID 1410 planar ROI group
  with the outline as an SCOORD Image Region (a closed ``POLYLINE``: first point = last) on its
  source image. Outlines of Grad-CAM
  regions carry the method "Gradient-weighted class activation" (DCM 130403).

The SEGs' Pixel Measures carry the source's PixelSpacing (else ImagerPixelSpacing) and, as
SliceThickness, its BodyPartThickness (the compressed breast the projection integrates over): the
standard does not require a thickness without a Frame of Reference, but highdicom's reader does.
Patient, study and equipment attributes come from the source files' headers, read again with
``pydicom.dcmread(..., stop_before_pixels=True)`` (a Study keeps no header); SCOORD coordinates are
``(column, row)`` with ``(0, 0)`` at the top-left corner of the top-left pixel, i.e. the result's
pixel-centre coordinates plus 0.5. Only studies loaded from DICOM files can be exported: a raster
study has no UIDs or patient module to reference (:class:`NotDicomSourceError`). highdicom is
imported when an export runs; without it :class:`DicomExportError` says what to install.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import MammoError, StudyError
from engine.study import STANDARD_VIEWS

if TYPE_CHECKING:
    from pydicom import Dataset

    from engine.result import Result
    from engine.study import Study

__all__ = [
    "SEG_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "MAX_FRACTIONAL_VALUE",
    "DicomExportError",
    "NotDicomSourceError",
    "export_study",
]

logger = logging.getLogger(__name__)

#: Series numbers of the exported SEG and SR series.
SEG_SERIES_NUMBER = 9701
SR_SERIES_NUMBER = 9702
#: FRACTIONAL segments store ``round(p * 255)``: values round-trip within 0.5 / 255.
MAX_FRACTIONAL_VALUE = 255
_MANUFACTURER = "mammo-viewer"


class DicomExportError(MammoError):
    """The export cannot run (highdicom missing) or highdicom refused the objects."""


class NotDicomSourceError(StudyError):
    """The study's images are not DICOM files (raster images have no UIDs to reference)."""


def _import_highdicom() -> Any:
    try:
        import highdicom
    except Exception as exc:  # any failure to import is a missing or broken install
        raise DicomExportError(
            f"DICOM export needs the 'highdicom' package ({type(exc).__name__}); "
            "install it with: pip install highdicom"
        ) from exc
    return highdicom


def _read_sources(study: Study, views: Sequence[str]) -> dict[str, Dataset]:
    """Re-read the source headers (no pixels) and check they are the images that were scored."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out: dict[str, Dataset] = {}
    for view in views:
        image = study.views[view]
        if image.sop_instance_uid is None:
            raise NotDicomSourceError(
                study.path,
                f"DICOM export needs DICOM source images; {view} is {image.relpath}, a raster file",
            )
        try:
            ds = pydicom.dcmread(image.path, stop_before_pixels=True)
        except (OSError, InvalidDicomError) as exc:
            raise NotDicomSourceError(image.path, f"cannot re-read the DICOM header ({exc})") from None
        if str(ds.get("SOPInstanceUID", "")) != image.sop_instance_uid:
            raise NotDicomSourceError(image.path, "file changed since the study was loaded (other SOP Instance UID)")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise NotDicomSourceError(image.path, "multi-frame source image: only single-frame views are exported")
        out[view] = ds
    return out


def _algorithm(hd: Any, result: Result) -> Any:
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=result.model,
        version=result.model_version or "0",
        family=codes.cid7162.ArtificialIntelligence,
    )


def _save(ds: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
    return path


def _pixel_measures(hd: Any, source: Dataset) -> Any:
    """The SEG's Pixel Measures: the source's spacing, and its compressed breast thickness.

    A projection image has no slice thickness and the standard does not ask for one when there
    is no Frame of Reference, but highdicom (and other readers) read a SEG only when the Pixel
    Measures carry both PixelSpacing and SliceThickness: the thickness the projection integrates
    over, BodyPartThickness, is the honest value. Without it the attributes highdicom copies from
    the source are kept (None).
    """
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing")
    thickness = source.get("BodyPartThickness")
    if not spacing or thickness in (None, "") or float(thickness) <= 0:
        return None
    return hd.PixelMeasuresSequence(
        pixel_spacing=[float(spacing[0]), float(spacing[1])], slice_thickness=float(thickness)
    )


def _segmentation(
    hd: Any,
    source: Dataset,
    pixels: np.ndarray,
    *,
    binary: bool,
    label: str,
    result: Result,
    series_uid: str,
    instance_number: int,
    description: str,
) -> Any:
    from pydicom.sr.codedict import codes

    laterality = codes.SCT.Right if str(source.get("ImageLaterality", "")) == "R" else codes.SCT.Left
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(hd, result),
        anatomic_regions=[codes.SCT.LeftBreast if laterality == codes.SCT.Left else codes.SCT.RightBreast],
    )
    kwargs: dict[str, Any] = {}
    measures = _pixel_measures(hd, source)
    if measures is not None:
        kwargs["pixel_measures"] = measures
    if binary:
        seg_type = hd.seg.SegmentationTypeValues.BINARY
        array = pixels.astype(bool)
    else:
        seg_type = hd.seg.SegmentationTypeValues.FRACTIONAL
        array = np.clip(pixels.astype(np.float32), 0.0, 1.0)
        kwargs.update(
            fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
            max_fractional_value=MAX_FRACTIONAL_VALUE,
        )
    try:
        return hd.seg.Segmentation(
            source_images=[source],
            pixel_array=array,
            segmentation_type=seg_type,
            segment_descriptions=[segment],
            series_instance_uid=series_uid,
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=instance_number,
            manufacturer=_MANUFACTURER,
            manufacturer_model_name=result.model[:64],
            software_versions=f"{result.model} {result.model_version}"[:64],
            device_serial_number="0",
            content_description=description[:64],
            content_label="AI_SEG",
            omit_empty_frames=False,
            **kwargs,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        where = source.get("SOPInstanceUID", "?")
        raise DicomExportError(f"{where}: highdicom refused the Segmentation ({exc})") from exc


#: BI-RADS category -> SNOMED CT mammography assessment code (CID 6026) and a meaning short
#: enough for a DICOM code meaning (64 characters; SNOMED's own full names are longer).
_BIRADS_CODES: dict[int, tuple[str, str]] = {
    0: ("397138000", "BI-RADS 0 - Need additional imaging evaluation"),
    1: ("397140005", "BI-RADS 1 - Negative"),
    2: ("397141009", "BI-RADS 2 - Benign finding"),
    3: ("397143007", "BI-RADS 3 - Probably benign finding"),
    4: ("397144001", "BI-RADS 4 - Suspicious abnormality"),
    5: ("397145000", "BI-RADS 5 - Highly suggestive of malignancy"),
}


def _birads_code(hd: Any, category: Any) -> Any:
    try:
        value, meaning = _BIRADS_CODES[int(category)]
    except (KeyError, TypeError, ValueError):
        return None
    return hd.sr.CodedConcept(value=value, scheme_designator="SCT", meaning=meaning)


def _closed_polygon(poly: np.ndarray) -> np.ndarray | None:
    """Result pixel-centre ``(x, y)`` outline -> closed SCOORD ``(column, row)`` polyline."""
    pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2) + 0.5
    if len(pts) >= 2 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    if len(pts) < 3:
        return None
    return np.vstack([pts, pts[:1]]).astype(np.float32)


def _report(hd: Any, study: Study, result: Result, sources: Mapping[str, Dataset]) -> Any:
    from pydicom.sr.codedict import codes

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=result.model[:64], manufacturer_name=_MANUFACTURER, model_name=result.model_version[:64]
        ),
    )
    algorithm = hd.sr.AlgorithmIdentification(name=result.model, version=result.model_version or "0")
    groups: list[Any] = []
    for side in ("R", "L"):
        sr = result.sides.get(side)
        views = [v for v in STANDARD_VIEWS if v[0] == side and v in sources]
        if sr is None or not sr.available or not views:
            continue
        laterality = codes.SCT.Right if side == "R" else codes.SCT.Left
        site = [hd.sr.FindingSite(anatomic_location=codes.SCT.Breast, laterality=laterality)]
        measurements = []
        if sr.p_malignant is not None:
            measurements.append(
                hd.sr.Measurement(
                    name=codes.DCM.ProbabilityOfCancer, value=float(sr.p_malignant), unit=codes.UCUM.NoUnits,
                    algorithm_id=algorithm,
                )  # fmt: skip
            )
        evaluations = []
        birads = _birads_code(hd, sr.birads_pred) if sr.birads_pred is not None else None
        if birads is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(name=codes.DCM.AssessmentCategory, value=birads))
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{side} breast"),
                finding_type=codes.SCT.Breast,
                finding_sites=site,
                algorithm_id=algorithm,
                measurements=measurements or None,
                qualitative_evaluations=evaluations or None,
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(sources[v]) for v in views],
            )
        )
        for view in views:
            polys = [p for p in (_closed_polygon(c) for c in result.contours.get(view, [])) if p is not None]
            for k, poly in enumerate(polys, start=1):
                region = hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=poly,
                    source_image=hd.sr.SourceImageForRegion.from_source_image(sources[view]),
                )
                method = codes.DCM.GradientWeightedClassActivation if result.contour_source != "segmentation" else None
                groups.append(
                    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{view} region {k}"),
                        referenced_region=region,
                        finding_category=codes.SCT.MorphologicallyAbnormalStructure,
                        finding_type=codes.SCT.Lesion,
                        finding_sites=site,
                        method=method,
                        algorithm_id=algorithm,
                    )
                )
    if not groups:
        raise DicomExportError(f"{study.path.name}: nothing to report (no breast was scored)")
    return hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.Mammography,
        imaging_measurements=groups,
    )


def export_study(study: Study, result: Result, out_dir: str | Path) -> list[Path]:
    """Write the DICOM export of a scored study (module docstring for what and why).

    Args:
        study: The study as loaded from DICOM files (its views' files are read again).
        result: Its result (heatmaps become FRACTIONAL segments; lesion masks BINARY segments;
            contours SR image regions).
        out_dir: Output folder (created).

    Returns:
        The files written: ``seg_<view>.dcm`` per view with a heatmap, ``seg_lesions_<view>.dcm``
        per view with a lesion mask, then ``sr.dcm``.

    Raises:
        NotDicomSourceError: A scored view is not a DICOM file (raster study), or its file changed.
        DicomExportError: highdicom is not installed, or refused an object.
    """
    from engine.batch import lesion_masks

    hd = _import_highdicom()
    views = [v for v in STANDARD_VIEWS if v in study.views and v not in result.missing]
    if not views:
        raise DicomExportError(f"{study.path.name}: no scored view to export")
    sources = _read_sources(study, views)
    out = Path(out_dir)
    written: list[Path] = []
    series_uid = hd.UID()
    number = 0
    for view in views:
        if view in result.cams:
            number += 1
            ds = _segmentation(
                hd, sources[view], np.asarray(result.heatmaps[view]), binary=False,
                label=f"Grad-CAM {view}", result=result, series_uid=series_uid, instance_number=number,
                description=f"Grad-CAM {result.view_targets.get(view, result.target or '')}",
            )  # fmt: skip
            written.append(_save(ds, out / f"seg_{view}.dcm"))
    masks = lesion_masks(result)
    for view in views:
        if view in masks:
            number += 1
            ds = _segmentation(
                hd, sources[view], masks[view], binary=True, label=f"Lesion {view}", result=result,
                series_uid=series_uid, instance_number=number, description="lesion segmentation",
            )  # fmt: skip
            written.append(_save(ds, out / f"seg_lesions_{view}.dcm"))
    report = _report(hd, study, result, sources)
    try:
        sr = hd.sr.ComprehensiveSR(
            evidence=[sources[v] for v in views],
            content=report,
            series_instance_uid=hd.UID(),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=_MANUFACTURER,
            is_complete=True,
            series_description=f"AI report {result.model}"[:64],
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise DicomExportError(f"{study.path.name}: highdicom refused the SR ({exc})") from exc
    written.append(_save(sr, out / "sr.dcm"))
    logger.info("DICOM export: %d file(s)", len(written))
    return written
