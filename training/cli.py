"""``mammo-train``: train, export and reproduce the four-view models (SPEC section 3).

Examples::

    mammo-train training/configs/hybrid-vssm-shared.toml --out runs/hybrid-vssm-shared
    mammo-train training/configs/resnet18-baseline.toml --data /data/phantom --set train.epochs=30
    mammo-train export runs/hybrid-vssm-shared --name hybrid-vssm-shared   # -> resources/models/
    mammo-train reproduce hybrid-vssm-shared                               # re-run the card's config
    mammo-train grid                                                       # rewrite training/configs/grid
    torchrun --nproc_per_node=4 -m training CONFIG.toml --out RUN          # DistributedDataParallel

Training an existing run folder again resumes it after its last finished epoch (``--restart``
starts over). Exit status: 0 done, 2 bad arguments/config/data, 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path

from engine.errors import MammoError

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)

_SUBCOMMANDS = ("export", "reproduce", "grid")


def build_parser() -> dict[str, argparse.ArgumentParser]:
    """The parsers of ``mammo-train`` (``"train"``) and its subcommands."""
    train = argparse.ArgumentParser(
        prog="mammo-train",
        description="Train a four-view model from a TOML config (subcommands: export, reproduce, grid).",
        epilog="mammo-train export RUN --name NAME | mammo-train reproduce NAME | mammo-train grid [DIR]",
    )
    train.add_argument("config", help="TOML config (training/configs/*.toml)")
    train.add_argument("--data", help="dataset folder (default: the config's data.root; the phantom is generated)")
    train.add_argument("--out", help="run folder (default: runs/<config name>)")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value by its dotted key, e.g. --set train.epochs=3 (repeatable)",
    )  # fmt: skip
    train.add_argument("--restart", action="store_true", help="start over instead of resuming the run folder")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")

    export = argparse.ArgumentParser(prog="mammo-train export", description="Export a finished run as a bundled model.")
    export.add_argument("run", help="run folder")
    export.add_argument("--name", required=True, help="model name (kebab-case), e.g. hybrid-vssm-shared")
    export.add_argument("--models-dir", help="models folder (default resources/models or $MAMMO_MODELS_DIR)")
    export.add_argument("--version", default="1.0", help="model version (default 1.0)")
    export.add_argument("--description", help="one line for the model card")
    export.add_argument("--force", action="store_true", help="replace an existing model folder")

    repro = argparse.ArgumentParser(
        prog="mammo-train reproduce", description="Re-train a bundled model from its card and compare."
    )
    repro.add_argument("name", help="bundled model name or model folder")
    repro.add_argument("--models-dir", help="models folder")
    repro.add_argument("--data", help="dataset folder (default: the one the card records, when present)")
    repro.add_argument("--out", help="run folder to keep (default: a temporary folder)")
    repro.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    repro.add_argument("--json", action="store_true", help="print the comparison as JSON")
    repro.add_argument("--no-progress", action="store_true", help="no progress bars")
    repro.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")

    grid = argparse.ArgumentParser(prog="mammo-train grid", description="Write the paper's experiment grid configs.")
    grid.add_argument("out", nargs="?", help="folder (default training/configs/grid)")
    return {"train": train, "export": export, "reproduce": repro, "grid": grid}


def _setup_logging(quiet: bool) -> None:
    """Console at INFO (WARNING with ``--quiet``); the run's train.log always gets INFO."""
    import os

    handler = logging.StreamHandler()
    # under torchrun only rank 0 talks (the others still write nothing but warnings)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    handler.setLevel(logging.WARNING if quiet or not main_rank else logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _command(argv: list[str]) -> str:
    return shlex.join(["mammo-train", *argv])


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from training.config import load_config
    from training.loop import train

    config = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / (config.name or Path(args.config).stem)
    with nullcontext() if args.quiet else logging_redirect_tqdm():
        result = train(
            config, out, data_root=args.data, command=_command(argv), resume=not args.restart,
            progress=not args.no_progress,
        )  # fmt: skip
    table = result.test.get("table", {})
    text = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in table.items())
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"mammo-train: {result.epochs_run} epochs, best epoch {result.best_epoch}, "
            f"{result.test.get('split', 'test')}: {text} -> {result.run_dir}"
        )
    return 0


def _export(args: argparse.Namespace, argv: list[str]) -> int:
    from engine.weights import default_models_dir
    from training.export import export_run

    root = Path(args.models_dir) if args.models_dir else default_models_dir()
    target = root / args.name
    if (target / "model.json").exists() and not args.force:
        print(f"mammo-train export: {target} exists (use --force to replace it)", file=sys.stderr)
        return 2
    card = export_run(
        args.run, args.name, models_dir=root, version=args.version, description=args.description,
        export_command=_command(argv),
    )  # fmt: skip
    table = card.metrics.get("table", {})
    text = ", ".join(f"{k} {v:.4f}" for k, v in table.items() if v is not None)
    print(f"mammo-train export: {card.name} {card.version} -> {card.folder} (sha256 {card.sha256[:12]}...; {text})")
    return 0


def _reproduce(args: argparse.Namespace, argv: list[str]) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from training.export import reproduce

    with nullcontext() if args.quiet else logging_redirect_tqdm():
        report = reproduce(
            args.name, models_dir=args.models_dir, data_root=args.data, out_dir=args.out,
            overrides=args.overrides, progress=not args.no_progress, command=_command(argv),
        )  # fmt: skip
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "text"}, indent=2))
    else:
        print(report["text"])
    return 0


def _grid(args: argparse.Namespace) -> int:
    from training.config import CONFIG_DIR, write_grid

    out = Path(args.out) if args.out else CONFIG_DIR / "grid"
    files = write_grid(out)
    print(f"mammo-train grid: wrote {len(files)} configs to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``mammo-train``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parsers = build_parser()
    sub = argv[0] if argv and argv[0] in _SUBCOMMANDS else "train"
    rest = argv[1:] if sub != "train" else argv
    args = parsers[sub].parse_args(rest)
    _setup_logging(getattr(args, "quiet", False))
    try:
        if sub == "export":
            return _export(args, argv)
        if sub == "reproduce":
            return _reproduce(args, argv)
        if sub == "grid":
            return _grid(args)
        return _train(args, argv)
    except MammoError as err:
        print(f"mammo-train: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mammo-train: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
