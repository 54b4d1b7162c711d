"""Every model family of seed 000 learns: loss falls and accuracy beats chance on a small task.

The task is built here (synthetic, 64 x 64 per view, 32 x 32 for the ResNets, a few hundred
studies in memory) so that a family can show it learns in seconds on two CPU cores:

- each breast holds nothing, a benign finding (a faint, broad blob) or a malignant one (a bright,
  compact blob), drawn independently per breast; the finding shows in both views of that breast
  (CC and MLO) at independent positions, over a smooth random "parenchyma" inside a half-ellipse;
- labels per breast: malignancy (1 = malignant) and BI-RADS over ``(1, 3, 5)``
  (none -> 1, benign -> 3, malignant -> 5);
- a quarter of the studies miss one view (zeros + ``missing``), as real screening data does.

The model must put the right finding on the right side's heads through the fusion, so the test
exercises encoder, attention fusion and quad heads together. Reduced widths keep it fast; the
architecture (stages, blocks, fusion, heads) is each family's own.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models.fourview import FourViewConfig, build_fourview

# Six families x 100-150 optimiser steps take several CPU minutes on two cores: too long for the
# default suite's budget. Run with `bash scripts/test.sh --runslow tests/engine/test_models_learn.py`.
pytestmark = pytest.mark.slow

SIZE = 64
BIRADS = (1, 3, 5)


def make_task(
    n: int, size: int, seed: int, p_missing: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic four-view studies.

    Returns:
        images ``(n, 4, 1, size, size)`` in [0, 1] (STANDARD_VIEWS order), missing ``(n, 4)``
        bool, malignancy ``(n, 2)`` long and BI-RADS class index ``(n, 2)`` long (sides R, L).
    """
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n * 4, 1, size // 8, size // 8, generator=g)
    texture = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    breast = ((xx / (0.8 * size)) ** 2 + ((yy - size / 2) / (0.45 * size)) ** 2 <= 1).float()
    images = ((0.15 + 0.3 * texture) * breast).view(n, 4, 1, size, size)
    finding = torch.randint(0, 3, (n, 2), generator=g)  # 0 none, 1 benign, 2 malignant
    per_view = finding[:, [0, 1, 0, 1]]  # R-CC, L-CC, R-MLO, L-MLO
    cy = torch.randint(size // 4, 3 * size // 4, (n, 4), generator=g).float()[..., None, None]
    cx = torch.randint(size // 8, size // 2, (n, 4), generator=g).float()[..., None, None]
    sigma = torch.where(per_view == 2, 0.04 * size, 0.12 * size)[..., None, None]
    amplitude = torch.tensor([0.0, 0.12, 0.45])[per_view][..., None, None]
    blob = amplitude * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    images = (images + blob.unsqueeze(2)).clamp(0, 1)
    missing = torch.zeros(n, 4, dtype=torch.bool)
    drop = torch.rand(n, generator=g) < p_missing
    which = torch.randint(0, 4, (n,), generator=g)
    missing[drop, which[drop]] = True
    images[missing] = 0
    return images, missing, (finding == 2).long(), finding


def task_loss(out: dict[str, torch.Tensor], malignant: torch.Tensor, birads: torch.Tensor):
    """0.5 * label + 0.5 * BI-RADS cross-entropy, each the mean of both sides (seed 000, 4.1)."""
    label = F.cross_entropy(out["malignancy_R"], malignant[:, 0]) + F.cross_entropy(
        out["malignancy_L"], malignant[:, 1]
    )
    bir = F.cross_entropy(out["birads_R"], birads[:, 0]) + F.cross_entropy(
        out["birads_L"], birads[:, 1]
    )
    return 0.25 * label + 0.25 * bir


def accuracy(out: dict[str, torch.Tensor], task: str, target: torch.Tensor) -> float:
    pred = torch.stack([out[f"{task}_R"].argmax(1), out[f"{task}_L"].argmax(1)], dim=1)
    return float((pred == target).float().mean())


def majority_rate(target: torch.Tensor) -> float:
    return float(torch.bincount(target.flatten()).max()) / target.numel()


_SMALL_VSSM = {"vssm_depths": (1, 1, 1, 1), "vssm_dims": (16, 32, 64, 128), "d_state": 4}
_SMALL_HYBRID = {"vssm_dims": (64, 128), "d_state": 4}

# family -> (config overrides, input side, steps, studies per batch). The ResNets train at 32 x 32
# (output stride 32: a 1 x 1 final map) to stay within the test budget; the blobs still show.
FAMILIES = {
    "hybrid-vssm-shared": ({"encoder": "hybrid", **_SMALL_HYBRID}, SIZE, 150, 8),
    "hybrid-vssm-view": (
        {"encoder": "hybrid", "sharing": "view_specific", **_SMALL_HYBRID}, SIZE, 150, 8
    ),
    "resnet18-shared": ({"encoder": "resnet18"}, 32, 150, 8),
    "resnet50-shared": ({"encoder": "resnet50"}, 32, 150, 4),
    "vssm-shared": ({"encoder": "vssm", **_SMALL_VSSM}, SIZE, 100, 8),
    "vssm-view": ({"encoder": "vssm", "sharing": "view_specific", **_SMALL_VSSM}, SIZE, 100, 8),
}

_DATA: dict[int, tuple] = {}


def task_data(size: int) -> tuple:
    """(train, held-out) task tensors at ``size``, built once per size."""
    if size not in _DATA:
        _DATA[size] = (make_task(512, size, seed=1), make_task(96, size, seed=2))
    return _DATA[size]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_learns(family):
    overrides, size, steps, batch = FAMILIES[family]
    (x, missing, malignant, birads), (xe, me, male, bire) = task_data(size)
    torch.manual_seed(0)
    config = FourViewConfig(in_size=size, fusion_hidden=32, birads_classes=BIRADS, **overrides)
    model = build_fourview(config)
    # fused AdamW: the per-parameter loop of the default implementation dominates on CPU.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
    # cosine decay: the weights settle at the end, so BatchNorm's running statistics (used in
    # eval mode) catch up with them.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    g = torch.Generator().manual_seed(3)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = task_loss(model(x[idx], missing[idx]), malignant[idx], birads[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out = model(xe, me)
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    acc_m, acc_b = accuracy(out, "malignancy", male), accuracy(out, "birads", bire)
    summary = f"{family}: loss {first:.3f} -> {last:.3f}, accuracy {acc_m:.2f} / {acc_b:.2f}"
    assert last < 0.6 * first, summary
    assert float(task_loss(out, male, bire)) < 0.6 * first, summary  # held-out loss fell too
    assert acc_m >= majority_rate(male) + 0.15, summary  # chance: about 0.67
    assert acc_b >= majority_rate(bire) + 0.2, summary  # chance: about 0.36
    assert torch.all(out["attention"][me] == 0)
