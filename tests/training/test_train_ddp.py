"""Distributed training: `torchrun --nproc_per_node=2 -m training` (gloo, CPU) = one process.

Two processes with batch 2 see the global batch of one process with batch 4: the same sampler
permutation, the loss normalised over the global batch, BatchNorm statistics over both processes.
Dropout is switched off (its masks are per process by design); the augmentation is per sample and
stays on. The losses agree to float rounding; the weights too, except where Adam turns rounding
noise into full steps (parameters whose gradient is analytically zero, such as a convolution bias
in front of a BatchNorm), which leaves a few elements a few learning rates apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import tiny_config, write_tiny_toml

from training.loop import read_metrics, train


def test_two_gloo_processes_match_one_process(tmp_path_factory, tmp_path):
    toml = write_tiny_toml(tmp_path_factory, tmp_path / "tiny.toml")
    common = ["model.dropout=0.0"]
    ddp_dir = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "training", str(toml), "--out", str(ddp_dir), "--no-progress", "-q",
        "--set", "train.batch_size=2", *[a for s in common for a in ("--set", s)],
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=500, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mammo-train: 2 epochs" in proc.stdout and proc.stdout.count("mammo-train:") == 1  # rank 0 prints
    run_info = json.loads((ddp_dir / "run.json").read_text())
    assert run_info["processes"] == 2

    single_dir = tmp_path / "single"
    train(tiny_config(tmp_path_factory, "train.batch_size=4", *common), single_dir, progress=False)

    ddp, single = read_metrics(ddp_dir), read_metrics(single_dir)
    assert [r["epoch"] for r in ddp] == [1, 2]
    for a, b in zip(ddp, single):
        # rounding-level agreement (the epoch-to-epoch change of these losses is about 1e-2)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        for task in ("malignancy", "birads"):
            assert a["train_task_loss"][task] == pytest.approx(b["train_task_loss"][task], rel=1e-4)
    wa, wb = load_file(str(ddp_dir / "last.safetensors")), load_file(str(single_dir / "last.safetensors"))
    assert set(wa) == set(wb)  # synchronised BatchNorm keeps the plain BatchNorm keys
    params = [k for k in wa if wa[k].is_floating_point() and "running" not in k]
    diff = torch.cat([(wa[k].double() - wb[k].double()).abs().flatten() for k in params])
    lr, steps = 1e-4, 4
    assert float(diff.mean()) < 1e-6  # one process with batch 2 instead: about 2e-4
    assert float((diff > 1e-5).double().mean()) < 0.01  # ... and 96 % of the elements
    assert float(diff.max()) < 2 * lr * steps
    stats = [k for k in wa if "running" in k]
    rdiff = torch.cat([(wa[k].double() - wb[k].double()).abs().flatten() for k in stats])
    assert float(rdiff.max()) < 1e-3
    ta = json.loads((ddp_dir / "test_metrics.json").read_text())
    tb = json.loads((single_dir / "test_metrics.json").read_text())
    assert ta["per_study"]["study_ids"] == tb["per_study"]["study_ids"]
    np.testing.assert_allclose(ta["per_study"]["p_birads"], tb["per_study"]["p_birads"], atol=1e-4)
