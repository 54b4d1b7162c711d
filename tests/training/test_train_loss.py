"""The multi-task loss of seed 000 (section 4.1): class weights, masking of -1 labels, sides, tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.losses import MultiTaskLoss, inverse_frequency_weights, masked_weighted_ce

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_inverse_frequency_weights_hand_numbers():
    # 4 known labels (one -1 skipped): 3 x class 0, 1 x class 1 -> N / (K n_c) = 4/6 and 4/2
    np.testing.assert_allclose(inverse_frequency_weights([0, 0, 0, 1, -1], 2), [2 / 3, 2.0])
    # a class never seen weighs 1; 5 labels over 3 classes: 5/(3*3), 5/(3*2), 1
    np.testing.assert_allclose(
        inverse_frequency_weights(np.array([[0, 1], [0, -1], [1, 0]]), 3), [5 / 9, 5 / 6, 1.0]
    )
    np.testing.assert_allclose(inverse_frequency_weights([-1, -1], 2), [1.0, 1.0])
    with pytest.raises(ValueError, match="out of range"):
        inverse_frequency_weights([0, 2], 2)


def test_masked_weighted_ce_matches_torch_and_ignores_minus_one():
    logits = torch.tensor([[0.0, 0.0], [LN3, 0.0], [5.0, -5.0]])
    target = torch.tensor([0, 1, -1])
    w = torch.tensor([1.0, 3.0])
    num, den = masked_weighted_ce(logits, target, w)
    # (1 * ln2 + 3 * ln4) / (1 + 3): the third row (-1) takes no part
    assert float(den) == 4.0
    assert float(num / den) == pytest.approx(7 * LN2 / 4, rel=1e-6)
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=-1)
    assert float(num / den) == pytest.approx(float(ref), rel=1e-6)
    num0, den0 = masked_weighted_ce(logits, torch.tensor([-1, -1, -1]), w)
    assert float(num0) == 0.0 and float(den0) == 0.0


def _outputs():
    mal_r = torch.tensor([[0.0, 0.0], [LN3, 0.0], [2.0, 1.0]], requires_grad=True)
    mal_l = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], requires_grad=True)
    bir_r = torch.zeros(3, 3, requires_grad=True)
    bir_l = torch.tensor([[0.0, LN2, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    outputs = {"malignancy_R": mal_r, "malignancy_L": mal_l, "birads_R": bir_r, "birads_L": bir_l}
    targets = {
        "malignancy": torch.tensor([[0, -1], [1, -1], [-1, -1]]),  # left side: no label at all
        "birads": torch.tensor([[2, 1], [-1, -1], [0, -1]]),
    }
    return outputs, targets


def test_multitask_loss_hand_numbers():
    outputs, targets = _outputs()
    loss_fn = MultiTaskLoss(
        ("malignancy", "birads"),
        {"malignancy": 0.5, "birads": 0.5},
        {"malignancy": np.array([1.0, 3.0]), "birads": np.array([2.0, 1.0, 1.0])},
    )
    loss, parts = loss_fn(outputs, targets)
    # malignancy: only the right side has labels -> (1 ln2 + 3 ln4) / 4; left side ignored, not 0
    l_mal = 7 * LN2 / 4
    # BI-RADS right: uniform logits, targets 2 (w 1) and 0 (w 2) -> ln3; left: target 1 at p 1/2 -> ln2
    l_bir = (LN3 + LN2) / 2
    assert parts["malignancy"] == pytest.approx(l_mal, rel=1e-6)
    assert parts["birads"] == pytest.approx(l_bir, rel=1e-6)
    assert loss.detach().item() == pytest.approx(0.5 * l_mal + 0.5 * l_bir, rel=1e-6)
    loss.backward()
    # the label-less left malignancy head is on the graph with a zero gradient (DDP needs it)
    assert outputs["malignancy_L"].grad is not None and float(outputs["malignancy_L"].grad.abs().sum()) == 0.0
    # ignored rows get no gradient
    assert float(outputs["malignancy_R"].grad[2].abs().sum()) == 0.0
    assert float(outputs["birads_R"].grad[1].abs().sum()) == 0.0


def test_unweighted_single_task():
    outputs, targets = _outputs()
    loss_fn = MultiTaskLoss(("birads",), {"birads": 1.0})
    loss, parts = loss_fn({k: v for k, v in outputs.items() if k.startswith("birads")}, {"birads": targets["birads"]})
    assert loss.detach().item() == pytest.approx((LN3 + LN2) / 2, rel=1e-6)
    assert set(parts) == {"birads"}


def test_split_batch_with_global_denominators_equals_full_batch():
    """Two halves with summed denominators, gradients averaged = the full batch (DDP arithmetic)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    heads = {name: torch.randn(5, k, generator=g) for name, k in
             [("malignancy_R", 2), ("malignancy_L", 2), ("birads_R", 3), ("birads_L", 3)]}  # fmt: skip
    targets = {
        "malignancy": torch.tensor([[0, 1], [1, -1], [0, 0], [-1, -1], [1, 0], [-1, 1]]),
        "birads": torch.tensor([[2, 0], [-1, -1], [1, 2], [0, -1], [-1, -1], [-1, -1]]),  # 2nd half: L unknown
    }
    loss_fn = MultiTaskLoss(
        ("malignancy", "birads"), None, {"malignancy": np.array([0.7, 1.9]), "birads": np.array([1.0, 2.0, 0.5])}
    )

    def grads(rows, all_reduce=None):
        w = {k: v.clone().requires_grad_(True) for k, v in heads.items()}
        out = {k: x[rows] @ w[k] for k in w}
        t = {k: v[rows] for k, v in targets.items()}
        loss, _ = loss_fn(out, t, all_reduce=all_reduce, world_size=2 if all_reduce else 1)
        loss.backward()
        return loss.detach().item(), {k: v.grad for k, v in w.items()}

    full_loss, full = grads(slice(0, 6))
    halves = [slice(0, 3), slice(3, 6)]

    def dens(rows):
        return torch.stack([
            masked_weighted_ce(x[rows] @ heads[f"{task}_{side}"], targets[task][rows][:, j], loss_fn.class_weights[task])[1]
            for task in ("malignancy", "birads") for j, side in enumerate("RL")
        ])  # fmt: skip

    total_den = dens(halves[0]) + dens(halves[1])
    results = [grads(h, all_reduce=lambda t: total_den.clone()) for h in halves]
    assert (results[0][0] + results[1][0]) / 2 == pytest.approx(full_loss, rel=1e-6)
    for k in heads:
        torch.testing.assert_close((results[0][1][k] + results[1][1][k]) / 2, full[k], rtol=1e-5, atol=1e-7)
