"""Command-line tools of the engine (console scripts in ``pyproject.toml``; SPEC section 3).

- ``mammo-study STUDY_PATH [--json] [--png DIR] [--kind auto|MG|US]`` -> :func:`study_main`:
  what was found in a study and how.
- ``mammo-score INPUT_DIR -o RESULTS.csv [--model NAME] [--device ...] [--heatmaps DIR]
  [--masks DIR] [--json DIR] [--dicom DIR] [--resume] [--workers N]`` -> :func:`score_main`:
  batch scoring into a crash-safe CSV (:mod:`engine.batch` has the rules).

Every command returns its exit status: 0 on success, 1 with a one-line ``<prog>: <message>`` on
stderr for bad input (any :class:`~engine.errors.MammoError`, or an output that cannot be
written), 2 for bad arguments (argparse). ``mammo-score`` returns 130 when interrupted (Ctrl-C);
the results file is then valid and ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from engine.errors import MammoError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.study import Study, StudyImage

__all__ = ["study_main", "score_main", "default_model", "format_study", "write_study_pngs"]

logger = logging.getLogger(__name__)

_LIST_LIMIT = 8  # entries shown per list in the text summary (one screen)


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return 1


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _quiet_pydicom(verbose: bool) -> None:
    """pydicom's own warnings about odd files would break the one-line contract."""
    if verbose:
        return
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    import pydicom  # noqa: F401  (its config sets the "pydicom" logger level on import)

    logging.getLogger("pydicom").setLevel(logging.ERROR)


# --- mammo-study -----------------------------------------------------------------------------------


def _view_line(key: str, image: StudyImage) -> str:
    if image.pixel_spacing_mm is not None:
        row, col = image.pixel_spacing_mm
        spacing = f"{row:.4g}x{col:.4g} mm {'calibrated' if image.spacing_calibrated else 'uncalibrated'}"
    else:
        spacing = "no spacing"
    flags = [f"{len(image.voi_presets)} VOI preset{'s' if len(image.voi_presets) != 1 else ''}"]
    if image.inverted_for_display:
        flags.append("inverted")
    if image.for_processing:
        flags.append("FOR PROCESSING")
    return (
        f"  {key:<6} {image.relpath}  {image.shape[0]}x{image.shape[1]} {image.photometric}"
        f"  [laterality: {image.laterality_from}, view: {image.view_from}]  {spacing}; {', '.join(flags)}"
    )


def _section(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    shown = lines[:_LIST_LIMIT]
    more = [f"  ... and {len(lines) - len(shown)} more"] if len(lines) > len(shown) else []
    return [f"{title} ({len(lines)}):", *shown, *more]


def format_study(study: Study) -> str:
    """The one-screen text summary printed by ``mammo-study``.

    Args:
        study: A loaded study.

    Returns:
        Lines joined by newlines (long lists are cut with "... and N more").
    """
    from engine.study import STANDARD_VIEWS

    lines = [f"Study {study.study_id}  ({study.path})", "Views:"]
    for key in STANDARD_VIEWS:
        image = study.views.get(key)
        lines.append(_view_line(key, image) if image is not None else f"  {key:<6} missing")
    lines += _section("Extra images", [f"  {e.image.relpath}: {e.reason}" for e in study.extras])
    lines += _section(
        "Ultrasound", [f"  {u.relpath}  laterality {u.laterality or 'unknown'}" for u in study.ultrasound]
    )
    lines += _section(
        "CESM",
        [f"  {c.relpath}  {c.laterality or '?'}-{c.view or '?'} {c.cesm_kind}" for c in study.cesm],
    )
    lines += _section("Errors", [f"  {e.message}" for e in study.errors])
    image_warnings = [f"  {i.relpath}: {w}" for i in study.images() for w in i.warnings]
    lines += _section("Warnings", [f"  {w}" for w in study.warnings] + image_warnings)
    if study.missing:
        lines.append("Missing views: " + ", ".join(study.missing))
    return "\n".join(lines)


def _png_name(image: StudyImage, used: set[str]) -> str:
    stem = Path(image.relpath).stem
    candidates = [stem, re.sub(r"[\\/]+", "_", str(Path(image.relpath).with_suffix("")))]
    for name in candidates:
        if f"{name}.png".lower() not in used:
            return f"{name}.png"
    n = 2
    while f"{candidates[-1]}_{n}.png".lower() in used:
        n += 1
    return f"{candidates[-1]}_{n}.png"


def write_study_pngs(study: Study, out_dir: Path) -> list[Path]:
    """Write every image as an 8-bit PNG exactly as displayed with its default preset.

    Slots first (``R-CC.png``, ``L-CC.png``, ``R-MLO.png``, ``L-MLO.png``), then ultrasound, CESM
    and extra images under their source file stems (folders joined by ``_`` when two stems clash).

    Args:
        study: A loaded study.
        out_dir: Output folder (created).

    Returns:
        The files written, in that order.
    """
    from PIL import Image

    from engine.study import STANDARD_VIEWS

    out_dir.mkdir(parents=True, exist_ok=True)
    used = {f"{k}.png".lower() for k in STANDARD_VIEWS}
    jobs: list[tuple[str, StudyImage]] = [(f"{k}.png", study.views[k]) for k in STANDARD_VIEWS if k in study.views]
    for image in [*study.ultrasound, *study.cesm, *(e.image for e in study.extras)]:
        name = _png_name(image, used)
        used.add(name.lower())
        jobs.append((name, image))
    written = []
    for name, image in jobs:
        path = out_dir / name
        Image.fromarray(image.display).save(path)
        written.append(path)
    return written


def _study_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammo-study",
        description="Say what was found in a study (a folder, or one file) and how.",
    )
    parser.add_argument("study_path", metavar="STUDY_PATH", type=Path, help="study folder or single image file")
    parser.add_argument("--json", action="store_true", help="print the JSON summary (SPEC section 3) instead of text")
    parser.add_argument("--png", metavar="DIR", type=Path, help="write every image as displayed (8-bit PNG) to DIR")
    parser.add_argument(
        "--kind",
        choices=("auto", "MG", "US"),
        default="auto",
        help="read raster files without a kind token in their name as this kind (default: auto = MG)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the loader does")
    return parser


def study_main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """``mammo-study``: load a study and print its summary (text or ``--json``), optionally PNGs.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        stdout: Where the summary goes (default: ``sys.stdout``).

    Returns:
        The exit status (0 ok, 1 bad input with a one-line message on stderr, 2 bad arguments).
    """
    args = _study_parser().parse_args(argv)
    out = stdout or sys.stdout
    _setup_logging(args.verbose)
    _quiet_pydicom(args.verbose)
    from engine.io.loader import load_study

    try:
        study = load_study(args.study_path, kind=args.kind)
    except MammoError as exc:
        return _fail("mammo-study", str(exc))
    written: list[Path] = []
    if args.png is not None:
        try:
            written = write_study_pngs(study, args.png)
        except OSError as exc:
            return _fail("mammo-study", f"{args.png}: cannot write PNG files ({exc.strerror or exc})")
    if args.json:
        json.dump(study.summary(), out, indent=2)
        out.write("\n")
        if written:
            print(f"mammo-study: wrote {len(written)} PNG file(s) to {args.png}", file=sys.stderr)
    else:
        out.write(format_study(study) + "\n")
        if written:
            out.write(f"Wrote {len(written)} PNG file(s) to {args.png}\n")
    return 0


# --- mammo-score -----------------------------------------------------------------------------------

#: The model ``mammo-score`` and the Python API name first when none is given.
PREFERRED_MODEL = "hybrid-vssm-shared"


def default_model() -> str | None:
    """The model to use when none is named: ``hybrid-vssm-shared`` when installed, else the first
    bundled model by name, else None."""
    from engine.weights import list_models

    names = [c.name for c in list_models()]
    if PREFERRED_MODEL in names:
        return PREFERRED_MODEL
    return names[0] if names else None


def _score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammo-score",
        description=(
            "Score every study under a folder into a CSV: one row per study and breast side. "
            "A study is a folder that directly holds image files (DICOM or PNG/JPEG/TIFF); its "
            "sub-folders belong to it. The file stays valid if the run is killed; --resume continues it."
        ),
    )
    add = parser.add_argument
    add("input_dir", metavar="INPUT_DIR", type=Path, help="folder of studies")
    add("-o", "--output", metavar="RESULTS.csv", type=Path, required=True, help="results CSV")
    add("--model", metavar="NAME", help="bundled model name or model folder (default: the first installed)")
    add("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N] (default: auto)")
    add("--heatmaps", metavar="DIR", type=Path, help="write per-view Grad-CAM heatmaps (16-bit PNG) under DIR")
    add("--masks", metavar="DIR", type=Path, help="write lesion masks (PNG) under DIR, for models that segment")
    add("--json", metavar="DIR", type=Path, help="write each full result as DIR/<study_id>.json")
    add("--dicom", metavar="DIR", type=Path, help="write DICOM SEG + SR of each DICOM study under DIR")
    add("--resume", action="store_true", help="continue RESULTS.csv: skip the studies already in it")
    add("--overwrite", action="store_true", help="replace RESULTS.csv if it exists")
    add("--retry-errors", action="store_true", help="with --resume, score the studies with error rows again")
    add("--workers", type=int, default=1, metavar="N",
        help="studies loaded in parallel ahead of the model (0: none; default 1)")  # fmt: skip
    add("--loader", choices=("thread", "process"), default="thread", help="load in threads (default) or processes")
    add("--threads", type=int, metavar="N", help="CPU threads for the model (default: torch's choice)")
    add("-q", "--quiet", action="store_true", help="no progress bar")
    add("-v", "--verbose", action="store_true", help="log what the engine does")
    return parser


def _close(bars: list) -> None:
    for bar in bars:
        bar.close()


def score_main(argv: Sequence[str] | None = None) -> int:
    """``mammo-score``: score every study under a folder into a crash-safe CSV.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when the batch ran to its end (studies that failed have ``error``
        rows), 1 with a one-line message on stderr when it could not run, 2 for bad arguments,
        130 when interrupted.
    """
    parser = _score_parser()
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.retry_errors and not args.resume:
        parser.error("--retry-errors needs --resume")
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    _setup_logging(args.verbose)
    _quiet_pydicom(args.verbose)
    prog = "mammo-score"
    if not args.input_dir.is_dir():
        return _fail(prog, f"{args.input_dir}: no such folder")

    from engine.batch import run_batch
    from engine.inference import Engine

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    model = args.model or default_model()
    if model is None:
        from engine.weights import default_models_dir

        return _fail(prog, f"no bundled model installed in {default_models_dir()}; pass --model NAME or a model folder")
    try:
        engine = Engine(model, device=args.device)
    except (MammoError, ValueError) as exc:
        return _fail(prog, str(exc))

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bars: list[tqdm] = []

    def progress(p) -> None:  # noqa: ANN001  (engine.batch.BatchProgress)
        if not bars:  # made on the first call, when the number of studies to do is known
            bars.append(tqdm(total=p.total, unit="study", desc="scoring", file=sys.stderr,
                             disable=args.quiet, dynamic_ncols=True))  # fmt: skip
        bar = bars[0]
        if p.study_id is None:
            return
        bar.update(1)
        if p.errors:
            bar.set_postfix(errors=p.errors, refresh=False)

    try:
        with logging_redirect_tqdm(tqdm_class=tqdm):
            summary = run_batch(
                args.input_dir,
                args.output,
                engine,
                resume=args.resume,
                overwrite=args.overwrite,
                retry_errors=args.retry_errors,
                workers=args.workers,
                loader=args.loader,
                heatmaps_dir=args.heatmaps,
                masks_dir=args.masks,
                json_dir=args.json,
                dicom_dir=args.dicom,
                progress=progress,
            )
    except KeyboardInterrupt:
        _close(bars)
        print(f"{prog}: interrupted; {args.output} is valid: rerun with --resume to continue", file=sys.stderr)
        return 130
    except MammoError as exc:
        _close(bars)
        return _fail(prog, str(exc))
    except OSError as exc:
        _close(bars)
        name = exc.filename or args.output
        return _fail(prog, f"{name}: cannot write ({exc.strerror or exc})")
    _close(bars)
    if summary.repaired:
        repaired = " and ".join(summary.repaired)
        print(f"{prog}: {args.output.name}: removed {repaired} left by an interrupted run", file=sys.stderr)
    parts = [f"{summary.scored} scored", f"{summary.errors} error{'s' if summary.errors != 1 else ''}"]
    if summary.skipped:
        parts.append(f"{summary.skipped} skipped (already in {args.output.name})")
    if summary.found == 0:
        parts = ["no study found"]
    print(
        f"{prog}: {', '.join(parts)} in {summary.seconds:.1f} s with {engine.name} {engine.version} "
        f"on {engine.device_name} -> {args.output}",
        file=sys.stderr,
    )
    return 0
