"""Export a run into a bundled model folder, and reproduce a bundled model from its card.

``mammo-train export RUN --name NAME`` loads the run's best weights into the architecture it
trained, and writes ``resources/models/NAME/`` with :func:`engine.weights.save_model`:
``model.safetensors`` and ``model.json``, whose card records (SPEC section 8):

- ``architecture`` (the model config), ``input`` (the preprocessing spec the engine rebuilds),
  ``classes``;
- ``training``: the resolved config, the command, the data (adapter, folder, licence, citation,
  fingerprint, split sizes, phantom generation parameters), torch version, date, duration,
  machine, best epoch, and the export command;
- ``metrics``: the paper's table (AUC and F1-macro of malignancy and BI-RADS) on the test split,
  with the full reports;
- ``sha256`` of the weights (filled in by ``save_model``).

``mammo-train reproduce NAME`` re-runs the config recorded in the card (same data, same seed) into
a fresh run folder, exports it to a scratch folder the same way, and compares: the metrics side by
side, and the sha256 of the weights' tensors (equal when the run is bit-identical, which a CPU run
of the same torch version on the same data is expected to be; the tensors are hashed rather than
the file because safetensors does not keep the order of several metadata keys stable).
"""

from __future__ import annotations

import json
import logging
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from engine.weights import ModelCard, default_models_dir, find_model, save_model
from training.config import TrainConfig, apply_overrides
from training.data import TASK_CLASSES
from training.loop import RUN_FILES, RunResult, tensors_sha256, train
from training.metrics import TABLE_KEYS

__all__ = ["export_run", "build_card", "reproduce", "format_comparison", "TrainedRunError"]

logger = logging.getLogger(__name__)


class TrainedRunError(ModelError):
    """A run folder that cannot be exported (unfinished, or files missing)."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TrainedRunError(
            f"{path}: missing ({err.strerror or err}); is the run finished? (mammo-train CONFIG --out RUN)"
        ) from err
    except json.JSONDecodeError as err:
        raise TrainedRunError(f"{path}: not valid JSON (line {err.lineno})") from err


def _describe(arch: Any, data: dict[str, Any]) -> str:
    enc = {
        "hybrid": "Hybrid CNN-VSSM",
        "resnet18": "ResNet-18",
        "resnet50": "ResNet-50",
        "vssm": "pure VSSM",
    }.get(arch.encoder, arch.encoder)
    sharing = "shared encoder" if arch.sharing == "shared" else "view-specific encoders"
    tasks = " + ".join(arch.tasks)
    classes = ",".join(str(c) for c in arch.birads_classes)
    return (
        f"{enc} four-view model ({sharing}), {tasks}, BI-RADS {{{classes}}}, {arch.in_size} px; "
        f"trained on {data.get('dataset', '?')} (seed 000 recipe)"
    )


def build_card(
    run_dir: str | Path,
    name: str,
    *,
    version: str = "1.0",
    description: str | None = None,
    export_command: str = "",
) -> tuple[Any, dict[str, Any], Path]:
    """The architecture, the card fields and the weights file of a finished run.

    Returns:
        ``(architecture config, card dict without sha256, weights path)``.

    Raises:
        TrainedRunError: The run is not finished or its files are missing.
    """
    from engine.models.registry import config_from_dict
    from engine.preprocess import StudyPreprocessor

    run_dir = Path(run_dir)
    run = _read_json(run_dir / RUN_FILES["run"])
    test = _read_json(run_dir / RUN_FILES["test"])
    weights = run_dir / RUN_FILES["best"]
    if not weights.is_file():
        weights = run_dir / RUN_FILES["last"]
    if not weights.is_file():
        raise TrainedRunError(f"{run_dir}: no best.safetensors or last.safetensors")
    config = TrainConfig.from_dict(run["config"])
    arch = config_from_dict(run["architecture"])
    classes: dict[str, list[Any]] = {}
    if "malignancy" in arch.tasks:
        classes["malignancy"] = list(TASK_CLASSES["malignancy"])
    if "birads" in arch.tasks:
        classes["birads"] = list(arch.birads_classes)
    training = {
        "config": run["config"],
        "command": run.get("command") or "",
        "config_source": run.get("config_source"),
        "data": run.get("data", {}),
        "date": run.get("finished"),
        "started": run.get("started"),
        "torch_version": run.get("torch_version"),
        "where": run.get("machine", {}),
        "seconds": run.get("seconds"),
        "epochs_run": run.get("epochs_run"),
        "best_epoch": run.get("best_epoch"),
        "monitor": run.get("monitor"),
        "best_score": run.get("best_score"),
        "processes": run.get("processes"),
        "amp": run.get("amp"),
        "lr": run.get("lr"),
        "class_weights": run.get("class_weights"),
        "export_command": export_command,
    }
    metrics = {
        "split": test.get("split", "test"),
        "n_studies": test.get("n_studies"),
        "table": test.get("table", {}),
        "malignancy": test.get("malignancy"),
        "birads": test.get("birads"),
    }
    card = {
        "name": name,
        "version": version,
        "family": arch.to_dict().get("family", ""),
        "description": description or config.description or _describe(arch, run.get("data", {})),
        "architecture": arch.to_dict(),
        "input": StudyPreprocessor(arch.in_size, crop=config.data.crop).spec(),
        "classes": classes,
        "training": training,
        "metrics": {k: v for k, v in metrics.items() if v is not None},
    }
    return arch, card, weights


def export_run(
    run_dir: str | Path,
    name: str,
    *,
    models_dir: str | Path | None = None,
    version: str = "1.0",
    description: str | None = None,
    export_command: str = "",
) -> ModelCard:
    """Write ``<models_dir>/<name>/`` (model.safetensors + model.json) from a finished run.

    Args:
        run_dir: The run folder.
        name: Kebab-case model name (the folder name).
        models_dir: Default :func:`engine.weights.default_models_dir` (``resources/models``).
        version: Card version.
        description: One line (default: generated from the architecture and data).
        export_command: The export command line (recorded).

    Returns:
        The card as written.

    Raises:
        TrainedRunError: Unfinished run.
        WeightsMismatchError: Weights that do not fit the recorded architecture.
    """
    from engine.models.registry import create_model
    from safetensors.torch import load_file

    arch, card, weights = build_card(
        run_dir, name, version=version, description=description, export_command=export_command
    )
    model = create_model(arch, pretrained=False)
    model.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    model.eval()
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    written = save_model(model, card, root / name)
    logger.info("exported %s (%s) to %s", name, written.sha256[:12], written.folder)
    return written


def format_comparison(card_table: dict[str, Any], run_table: dict[str, Any]) -> str:
    """Text table ``metric | card | reproduced | difference``."""
    lines = [f"{'metric':<22}{'card':>10}{'reproduced':>12}{'diff':>10}"]
    for key in TABLE_KEYS:
        if key not in card_table and key not in run_table:
            continue
        a, b = card_table.get(key), run_table.get(key)

        def fmt(v: Any) -> str:
            return "-" if v is None else f"{v:.4f}"

        diff = "-" if a is None or b is None else f"{b - a:+.4f}"
        lines.append(f"{key:<22}{fmt(a):>10}{fmt(b):>12}{diff:>10}")
    return "\n".join(lines)


def reproduce(
    name: str,
    *,
    models_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    out_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Re-train a bundled model from its card and compare (see the module docstring).

    Args:
        name: Registry name or model folder.
        models_dir: Where names are looked up.
        data_root: Dataset folder; default the folder the card records when it exists (the
            phantom is otherwise regenerated from the recorded options).
        out_dir: Run folder (default: a temporary folder, removed afterwards).
        overrides: ``--set`` overrides applied to the recorded config (the hash then differs).
        progress: Progress bars.
        command: This command line.

    Returns:
        ``{"name", "card_table", "run_table", "identical", "card_sha256", "card_tensors_sha256",
        "run_tensors_sha256", "run_file_sha256", "max_abs_weight_diff", "data_same", "text",
        "run_dir"}``. ``identical`` compares the tensors' content hash
        (:func:`training.loop.tensors_sha256`): safetensors headers with several metadata keys
        are not byte-stable across processes, so the file hashes may differ for equal weights.
    """
    import torch
    from safetensors.torch import load_file

    card = find_model(name, models_dir)
    if not card.trained or not isinstance(card.training.get("config"), dict):
        raise ModelError(f"{card.path}: the card records no training config to reproduce")
    config = TrainConfig.from_dict(apply_overrides(card.training["config"], overrides))
    recorded = (card.training.get("data") or {}).get("root")
    root = data_root
    if root is None and recorded and Path(recorded).is_dir():
        root = recorded
    tmp: tempfile.TemporaryDirectory | None = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"reproduce-{card.name}-")
        out_dir = Path(tmp.name) / "run"
    try:
        result: RunResult = train(
            config, out_dir, data_root=root, command=command or f"mammo-train reproduce {shlex.quote(card.name)}",
            resume=False, progress=progress,
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="reproduce-export-") as scratch:
            written = export_run(result.run_dir, card.name, models_dir=scratch, version=card.version)
            file_sha = written.sha256
            mine = load_file(str(Path(scratch) / card.name / written.weights_file))
        theirs = load_file(str(card.folder / card.weights_file))  # type: ignore[operator]
        run_sha, card_tensors_sha = tensors_sha256(mine), tensors_sha256(theirs)
        max_diff = 0.0
        for k, v in theirs.items():
            if k in mine and mine[k].shape == v.shape and v.is_floating_point():
                max_diff = max(max_diff, float((mine[k].double() - v.double()).abs().max()) if v.numel() else 0.0)
        run_json = json.loads((result.run_dir / RUN_FILES["run"]).read_text(encoding="utf-8"))
        card_fp = (card.training.get("data") or {}).get("fingerprint")
        data_same = card_fp is not None and card_fp == run_json["data"]["fingerprint"]
        card_table = dict((card.metrics or {}).get("table") or {})
        run_table = dict(result.test.get("table") or {})
        identical = run_sha == card_tensors_sha
        text = [
            f"reproduce {card.name} {card.version}: {result.epochs_run} epochs in {result.seconds:.0f} s "
            f"(card: {card.training.get('seconds') or 0:.0f} s on {(card.training.get('where') or {}).get('device', '?')})",
            format_comparison(card_table, run_table),
            f"data: {'same fingerprint' if data_same else 'DIFFERENT from the card (fingerprint)'}",
            (
                f"weights: bit-identical (tensor sha256 {run_sha[:16]}...; file sha256 card "
                f"{card.sha256[:12]}..., run {file_sha[:12]}...)"
                if identical
                else f"weights: differ (tensor sha256 card {card_tensors_sha[:12]}..., run {run_sha[:12]}...; "
                f"max |dw| = {max_diff:.3g}; torch {torch.__version__} vs card {card.training.get('torch_version')})"
            ),
        ]
        return {
            "name": card.name,
            "card_table": card_table,
            "run_table": run_table,
            "identical": identical,
            "card_sha256": card.sha256,
            "card_tensors_sha256": card_tensors_sha,
            "run_tensors_sha256": run_sha,
            "run_file_sha256": file_sha,
            "max_abs_weight_diff": max_diff,
            "data_same": data_same,
            "text": "\n".join(text),
            "run_dir": str(result.run_dir) if tmp is None else None,
        }
    finally:
        if tmp is not None:
            tmp.cleanup()
