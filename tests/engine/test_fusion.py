"""Gated attention fusion (seed 000, eq. 8-10) with missing views masked out."""

from __future__ import annotations

import pytest
import torch

from engine.models.fourview import FourViewConfig, GatedAttentionFusion, build_fourview
from engine.study import STANDARD_VIEWS


def _fusion(dim: int = 6, hidden: int = 5, seed: int = 0) -> GatedAttentionFusion:
    torch.manual_seed(seed)
    return GatedAttentionFusion(dim, hidden)


def _random_masks(n: int, seed: int) -> torch.Tensor:
    """``(n, 4)`` bool masks with at least one present view per row, every pattern covered."""
    g = torch.Generator().manual_seed(seed)
    patterns = [[(p >> k) & 1 == 1 for k in range(4)] for p in range(15)]  # 0b1111 = all missing
    rows = patterns + [patterns[int(i)] for i in torch.randint(0, 15, (n - 15,), generator=g)]
    return torch.tensor(rows, dtype=torch.bool)


def test_alpha_zero_at_missing_and_sums_to_one():
    fusion = _fusion()
    missing = _random_masks(40, seed=1)
    v = torch.randn(40, 4, 6) * 3
    fused, alpha = fusion(v, missing)
    assert alpha.shape == (40, 4) and fused.shape == (40, 24)
    assert torch.all(alpha[missing] == 0.0)  # exactly zero, not small
    assert torch.all(alpha[~missing] > 0.0)
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(40), rtol=0, atol=1e-6)
    blocks = fused.view(40, 4, 6)
    assert torch.all(blocks[missing] == 0.0)
    torch.testing.assert_close(blocks[~missing], (alpha[..., None] * v)[~missing])


def test_matches_paper_formula_when_all_present():
    fusion = _fusion()
    v = torch.randn(8, 4, 6)
    fused, alpha = fusion(v, torch.zeros(8, 4, dtype=torch.bool))
    expected_alpha = torch.softmax(fusion.mlp(v.flatten(1)), dim=1)  # eq. 9
    torch.testing.assert_close(alpha, expected_alpha)
    torch.testing.assert_close(fused, (expected_alpha[..., None] * v).flatten(1))  # eq. 10


def test_content_of_missing_view_is_ignored():
    fusion = _fusion()
    missing = torch.tensor([[False, True, False, True], [True, False, False, False]])
    v = torch.randn(2, 4, 6, requires_grad=True)
    fused, alpha = fusion(v, missing)
    v2 = v.detach().clone()
    v2[missing] = torch.randn(int(missing.sum()), 6) * 100
    fused2, alpha2 = fusion(v2, missing)
    torch.testing.assert_close(fused, fused2)
    torch.testing.assert_close(alpha, alpha2)
    fused.sum().backward()
    assert torch.all(v.grad[missing] == 0) and v.grad[~missing].abs().sum() > 0


def test_all_missing_raises():
    fusion = _fusion()
    missing = torch.tensor([[False, False, False, False], [True, True, True, True]])
    with pytest.raises(ValueError, match="all four views missing"):
        fusion(torch.randn(2, 4, 6), missing)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_fourview(FourViewConfig(encoder="resnet18", in_size=64)).eval()


def test_model_masks_missing_views(small_model):
    torch.manual_seed(1)
    missing = _random_masks(15, seed=2)
    images = torch.rand(15, 4, 1, 64, 64)
    with torch.no_grad():
        out = small_model(images, missing)
        images2 = images.clone()
        images2[missing] = torch.rand(int(missing.sum()), 1, 64, 64)  # junk where missing
        out2 = small_model(images2, missing)
    alpha = out["attention"]
    assert torch.all(alpha[missing] == 0.0)
    torch.testing.assert_close(alpha.sum(1), torch.ones(15), rtol=0, atol=1e-6)
    for key in out:
        torch.testing.assert_close(out[key], out2[key])
    with pytest.raises(ValueError, match="all four views missing"):
        small_model(images[:2], torch.tensor([[False] * 4, [True] * 4]))


def test_present_views_encoded_as_if_alone(small_model):
    """Encoding only the present views gives each view the same map as encoding it alone."""
    torch.manual_seed(3)
    images = torch.rand(3, 4, 1, 64, 64)
    missing = torch.tensor(
        [[False, True, False, False], [False, False, False, False], [True, True, False, True]]
    )
    captured: dict[str, torch.Tensor] = {}
    handles = [
        tap.register_forward_hook(lambda m, i, o, k=key: captured.__setitem__(k, o))
        for key, tap in small_model.cam_layers().items()
    ]
    try:
        with torch.no_grad():
            small_model(images, missing)
            encoder = small_model.encoders[0]
            for view, key in enumerate(STANDARD_VIEWS):
                alone = encoder(images[:, view])
                for b in range(3):
                    if missing[b, view]:
                        assert torch.all(captured[key][b] == 0)
                    else:
                        torch.testing.assert_close(captured[key][b], alone[b])
    finally:
        for h in handles:
            h.remove()


def test_encoder_with_no_view_in_the_batch_gets_zero_maps_and_gradients():
    """View-specific model, both MLO views absent from the whole batch."""
    torch.manual_seed(0)
    model = build_fourview(
        FourViewConfig(encoder="resnet18", sharing="view_specific", in_size=64)
    ).train()
    images = torch.rand(2, 4, 1, 64, 64)
    missing = torch.tensor([[False, False, True, True], [False, True, True, True]])
    captured: dict[str, torch.Tensor] = {}
    handles = [
        tap.register_forward_hook(lambda m, i, o, k=key: captured.__setitem__(k, o))
        for key, tap in model.cam_layers().items()
    ]
    try:
        out = model(images, missing)
    finally:
        for h in handles:
            h.remove()
    assert torch.all(captured["R-MLO"] == 0) and torch.all(captured["L-MLO"] == 0)
    assert torch.all(out["attention"][:, 2:] == 0)
    sum(v.sum() for k, v in out.items() if k != "attention").backward()
    mlo_grads = [p.grad for p in model.encoders[1].parameters()]
    assert all(g is not None and torch.all(g == 0) for g in mlo_grads)
    assert any(p.grad.abs().sum() > 0 for p in model.encoders[0].parameters())
