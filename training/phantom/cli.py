"""``mammo-phantom``: write synthetic screening studies (SPEC section 6).

Examples::

    mammo-phantom OUT --studies 20 --seed 7                 # 20 four-view studies, demo size
    mammo-phantom OUT --studies 20 --seed 7 --with-us --with-cesm --size full
    mammo-phantom --stats --studies 1000 --seed 7           # label mix of a draw, no pixels
    mammo-phantom resources/samples/demo --demo-study       # the bundled demo study

Prints a one-line summary when done; exit status 2 on bad arguments or an unusable output path.
"""

from __future__ import annotations

import argparse
import logging
import sys

from training.phantom.dataset import write_dataset, write_demo_study
from training.phantom.geometry import SIZES
from training.phantom.plan import label_stats, plan_studies

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mammo-phantom``."""
    p = argparse.ArgumentParser(
        prog="mammo-phantom",
        description="Write synthetic screening studies (DICOM MG, optional US and CESM) with "
        "labels.csv, annotations.csv and lesion masks.",
    )
    p.add_argument("out", nargs="?", help="output folder (not needed with --stats)")
    p.add_argument("--studies", type=int, default=None, help="number of studies (default 20; 1000 with --stats)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0); same seed, same files")
    p.add_argument(
        "--size",
        choices=["demo", "full", "small", "tiny"],
        default="demo",
        help="demo: 1024 x 832 at 0.28 mm (default); full: 4096 x 3328 at 0.07 mm; small/tiny are "
        "for tests",
    )
    p.add_argument("--with-us", action="store_true", help="also write breast ultrasound images")
    p.add_argument("--with-cesm", action="store_true", help="also write CESM low-energy + recombined images")
    p.add_argument("--workers", type=int, default=1, help="processes to render with (default 1)")
    p.add_argument("--stats", action="store_true", help="print the label mix of a draw and exit (no pixels)")
    p.add_argument(
        "--demo-study",
        action="store_true",
        help="write the bundled demo study (four views + US + CESM) to OUT",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``mammo-phantom``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.stats:
        n = 1000 if args.studies is None else args.studies
        if n < 1:
            parser.error("--studies must be >= 1")
        print(label_stats(plan_studies(n, args.seed)))
        return 0
    if not args.out:
        parser.error("the output folder is required (unless --stats)")
    if args.size not in SIZES:  # pragma: no cover - argparse already checks
        parser.error(f"unknown size {args.size}")
    try:
        if args.demo_study:
            summary = write_demo_study(args.out)
        else:
            n = 20 if args.studies is None else args.studies
            if n < 1:
                parser.error("--studies must be >= 1")
            summary = write_dataset(
                args.out,
                n,
                args.seed,
                size=args.size,
                with_us=args.with_us,
                with_cesm=args.with_cesm,
                workers=max(1, args.workers),
            )
    except (OSError, ValueError) as err:
        print(f"mammo-phantom: {err}", file=sys.stderr)
        return 2
    print(f"mammo-phantom: {summary.line()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
