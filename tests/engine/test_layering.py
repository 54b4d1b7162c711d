"""Layering: ``engine`` never pulls in Qt, pyqtgraph, ``training`` or ``viewer``; ``import engine``
alone does not even import torch (checked in fresh interpreters)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("PySide6", "pyqtgraph", "training", "viewer", "shiboken6")


def _modules_after(code: str) -> set[str]:
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _bad(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)


def test_import_engine_is_light() -> None:
    mods = _modules_after("import engine")
    assert "torch" not in mods
    assert _bad(mods) == []


def test_the_whole_inference_side_stays_out_of_qt_and_training() -> None:
    mods = _modules_after(
        "import engine\n"
        "from engine import Engine, Result, SideResult, CamTarget, list_models, ModelCard\n"
        "import engine.preprocess, engine.weights, engine.gradcam, engine.contours\n"
        "import engine.result, engine.inference\n"
        "engine.list_models()\n"
    )
    assert "torch" in mods  # the lazy exports did load
    assert _bad(mods) == []


def test_listing_models_does_not_import_torch() -> None:
    mods = _modules_after("import engine\nengine.list_models()\n")
    assert "torch" not in mods and "safetensors" not in mods
