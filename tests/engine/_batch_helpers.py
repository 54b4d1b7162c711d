"""Shared pieces of the batch-scoring tests (not a test module): a tiny registry model, phantom
studies, and running ``mammo-score`` in a fresh process.

The model is a real registry architecture (a pure-VSSM four-view model with 8/16 channels and a
64 px input), so ``Engine(<folder>)`` and a ``mammo-score --model <folder>`` subprocess build it
from its card exactly as they would a bundled model; it scores a tiny study in milliseconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO", "save_tiny_model", "write_studies", "score_command", "score_env", "run_score", "segmenting_engine"]


def save_tiny_model(folder: Path, name: str = "tiny-vssm") -> Path:
    """Write a tiny registry model (random weights, seed 0) with a trained-looking card."""
    import torch

    from engine.models.registry import create_model, get_preset
    from engine.weights import save_model

    torch.manual_seed(0)
    cfg = get_preset(
        "vssm-shared", vssm_depths=(1, 1), vssm_dims=(8, 16), patch_size=8, in_size=64, fusion_hidden=8, d_state=4
    )
    model = create_model(cfg, pretrained=False)
    card = {
        "name": name,
        "version": "0.0.1",
        "description": "batch test model",
        "training": {"config": {"test": True}, "command": "pytest"},
    }
    save_model(model, card, folder)
    return folder


def write_studies(folder: Path, n: int, seed: int = 11, size: str = "tiny") -> Path:
    """``n`` phantom studies (``P0001`` ...) with ``labels.csv``, ``masks/`` and friends."""
    from training.phantom import write_dataset

    write_dataset(folder, studies=n, seed=seed, size=size)
    return folder


def score_command(*args: str | Path) -> list[str]:
    """The ``mammo-score`` command line, run by this interpreter (no install needed)."""
    code = "import sys; from engine.cli import score_main; sys.exit(score_main())"
    return [sys.executable, "-c", code, *(str(a) for a in args)]


def score_env() -> dict[str, str]:
    """Environment of a ``mammo-score`` subprocess: this checkout, one thread per library."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    return env


def run_score(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``mammo-score`` to its end."""
    return subprocess.run(
        score_command(*args), cwd=REPO, env=score_env(), capture_output=True, text=True, timeout=timeout
    )


def segmenting_engine(study, seed: int = 3, share: float = 0.35):
    """A toy four-view model with a mask head (``tests/engine/_inference_toys``), its mask bias
    shifted so that about ``share`` of the mask cells of ``study`` are lesion: a segmenting model
    with non-trivial masks and contours. Returns the :class:`~engine.inference.Engine`."""
    import numpy as np
    import torch
    from _inference_toys import ToyConfig, ToyFourView, toy_card

    from engine.inference import Engine

    torch.manual_seed(seed)
    toy = ToyFourView(ToyConfig(with_masks=True)).eval()
    eng = Engine.from_module(toy, toy_card(toy, "toy-seg", in_size=64), device="cpu")
    prep = eng.preprocessor(study)
    with torch.inference_mode():
        out = toy(torch.from_numpy(prep.images[None]), torch.from_numpy(prep.missing[None]))
    present = ~prep.missing
    logits = out["masks"][0].numpy()[present]
    with torch.no_grad():
        toy.mask_head.bias -= float(np.quantile(logits, 1.0 - share))
    eng.clear_cache()
    return eng
