"""Command-line tools of the engine (console scripts in ``pyproject.toml``; SPEC section 3).

- ``mammo-study STUDY_PATH [--json] [--png DIR] [--kind auto|MG|US]`` -> :func:`study_main`:
  what was found in a study and how.

Every command returns its exit status: 0 on success, 1 with a one-line ``<prog>: <message>`` on
stderr for bad input (any :class:`~engine.errors.MammoError`, or an output that cannot be
written), 2 for bad arguments (argparse).
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

__all__ = ["study_main", "format_study", "write_study_pngs"]

logger = logging.getLogger(__name__)

_LIST_LIMIT = 8  # entries shown per list in the text summary (one screen)


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return 1


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


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
    if not args.verbose:  # pydicom's own warnings about odd files would break the one-line contract
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        import pydicom  # noqa: F401  (its config sets the "pydicom" logger level on import)

        logging.getLogger("pydicom").setLevel(logging.ERROR)
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
