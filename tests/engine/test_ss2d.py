"""SS2D, the MedMamba conv|SS2D block and VSSM stages (seed 000, 2.1.2-2.1.3; SPEC 5.1).

SS2D's four scan orders and cross-merge are checked against a slow explicit version that walks
the pixels of each order one by one and runs the recurrence per pixel.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import engine.models.vssm as vssm
from engine.models.vssm import (
    SCAN_DIRECTIONS,
    SS2D,
    PatchEmbed,
    PatchMerging,
    VSSBlock,
    VSSStage,
    channel_shuffle,
)

PARAMS = ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")


def pixel_orders(height: int, width: int) -> list[list[tuple[int, int]]]:
    row = [(h, w) for h in range(height) for w in range(width)]
    col = [(h, w) for w in range(width) for h in range(height)]
    return [row, col, row[::-1], col[::-1]]


def slow_scan2d(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D core, pixel by pixel in each of the four orders; ``(B, Di, H, W) -> (B, H, W, Di)``."""
    batch, di, height, width = x.shape
    r, n = m.dt_rank, m.d_state
    A = -torch.exp(m.A_logs)
    out = x.new_zeros(batch, height, width, di)
    for b in range(batch):
        for k, order in enumerate(pixel_orders(height, width)):
            chans = slice(k * di, (k + 1) * di)
            h = x.new_zeros(di, n)
            for i, j in order:
                xv = x[b, :, i, j]
                dbl = m.x_proj_weight[k] @ xv
                dt = F.softplus(m.dt_projs_weight[k] @ dbl[:r] + m.dt_projs_bias[k])
                Bv, Cv = dbl[r : r + n], dbl[r + n :]
                h = torch.exp(dt[:, None] * A[chans]) * h + (dt * xv)[:, None] * Bv[None, :]
                y = h @ Cv + m.Ds[chans] * xv
                out = out.index_put(
                    (torch.tensor(b), torch.tensor(i), torch.tensor(j)), y, accumulate=True
                )
    return out


def tiny_ss2d(**kwargs) -> SS2D:
    torch.manual_seed(0)
    m = SS2D(4, d_state=3, ssm_ratio=1.5, dt_rank=2, **kwargs).double()
    with torch.no_grad():  # move away from the symmetric init so every parameter matters
        for name in PARAMS:
            p = getattr(m, name)
            p.add_(0.1 * torch.randn_like(p))
    return m


def test_scan_directions_documented():
    assert SCAN_DIRECTIONS == (
        "row-major",
        "column-major",
        "row-major reversed",
        "column-major reversed",
    )


def test_scan_sequences_follow_the_four_orders():
    b, d, h, w = 2, 3, 3, 5
    x = torch.arange(b * d * h * w, dtype=torch.float32).view(b, d, h, w)
    xs = SS2D.scan_sequences(x)
    assert xs.shape == (h * w, b, 4, d)
    for k, order in enumerate(pixel_orders(h, w)):
        for step, (i, j) in enumerate(order):
            torch.testing.assert_close(xs[step, :, k, :], x[:, :, i, j], rtol=0, atol=0)
    # Channels-last input (as the depthwise conv produces it) gives the same sequences.
    x_cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(SS2D.scan_sequences(x_cl), xs, rtol=0, atol=0)


def test_cross_merge_sums_each_pixel_once_per_direction():
    x = torch.randn(2, 3, 4, 5)
    merged = SS2D.cross_merge(SS2D.scan_sequences(x), 4, 5)
    assert merged.shape == (2, 4, 5, 3) and merged.is_contiguous()
    torch.testing.assert_close(merged, 4 * x.permute(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("height,width", [(3, 4), (1, 5), (4, 1)])
def test_scan2d_matches_explicit_pixel_loop(height, width):
    m = tiny_ss2d()
    x = torch.randn(2, m.d_inner, height, width, dtype=torch.float64, requires_grad=True)
    fast = m.scan2d(x)
    fast_grads = torch.autograd.grad(
        fast, [x] + [getattr(m, p) for p in PARAMS], torch.ones_like(fast)
    )
    slow = slow_scan2d(m, x)
    slow_grads = torch.autograd.grad(
        slow, [x] + [getattr(m, p) for p in PARAMS], torch.ones_like(slow)
    )
    assert fast.shape == (2, height, width, m.d_inner) and fast.dtype == torch.float64
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    for name, got, want in zip(("x",) + PARAMS, fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(
            got, want, rtol=1e-8, atol=1e-10, msg=lambda s, name=name: f"{name}: {s}"
        )


def test_ss2d_forward_is_the_documented_composition():
    m = tiny_ss2d()
    x = torch.randn(2, 3, 4, m.dim, dtype=torch.float64)
    xi, z = m.in_proj(x).chunk(2, dim=-1)
    xi = F.silu(m.conv2d(xi.permute(0, 3, 1, 2)))
    want = m.out_proj(m.out_norm(slow_scan2d(m, xi)) * F.silu(z))
    got = m(x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_ss2d_init_matches_vmamba():
    m = SS2D(32, d_state=16)
    assert (m.d_inner, m.dt_rank) == (64, 2)
    assert m.A_logs.dtype == torch.float32 and m.Ds.dtype == torch.float32
    torch.testing.assert_close(-torch.exp(m.A_logs[5]), -torch.arange(1.0, 17.0))
    torch.testing.assert_close(m.Ds, torch.ones(4 * 64))
    dt = F.softplus(m.dt_projs_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert m.x_proj_weight.shape == (4, 2 + 32, 64)
    assert m.dt_projs_weight.shape == (4, 64, 2)


def test_ss2d_scan_runs_in_fp32_under_autocast(monkeypatch):
    seen = []
    real = vssm.selective_scan_time_major

    def spy(u, delta, A, B, C, D=None, *args, **kwargs):
        seen.append((u.dtype, delta.dtype, A.dtype, D.dtype))
        return real(u, delta, A, B, C, D, *args, **kwargs)

    monkeypatch.setattr(vssm, "selective_scan_time_major", spy)
    torch.manual_seed(0)
    m = SS2D(16, d_state=4).eval()
    x = torch.randn(2, 5, 6, 16)
    with torch.no_grad():
        want = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m(x)
    assert seen == [(torch.float32,) * 4] * 2
    assert m.A_logs.dtype == torch.float32 and m.Ds.dtype == torch.float32
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, rtol=0.1, atol=0.05)


def test_channel_shuffle_interleaves_halves():
    a = torch.arange(4.0).view(1, 1, 1, 4)
    b = torch.arange(10.0, 14.0).view(1, 1, 1, 4)
    out = channel_shuffle(torch.cat([a, b], dim=-1), 2)
    assert out.flatten().tolist() == [0.0, 10.0, 1.0, 11.0, 2.0, 12.0, 3.0, 13.0]


def test_vss_block_is_residual_of_shuffled_conv_and_ssm_branches():
    torch.manual_seed(0)
    blk = VSSBlock(8, d_state=4).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for mod in blk.conv_branch:
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 5, 6, 8)
    with torch.no_grad():
        out = blk(x)
        conv = blk.conv_branch(x[..., :4].permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        ssm = blk.ss2d(blk.norm(x[..., 4:]))
    want = channel_shuffle(torch.cat([conv, ssm], dim=-1), 2) + x
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[..., 0::2] - x[..., 0::2], conv, rtol=1e-5, atol=1e-5)


def test_patch_merging_takes_2x2_blocks_in_documented_order():
    torch.manual_seed(0)
    pm = PatchMerging(3)
    x = torch.randn(2, 4, 6, 3)
    want_in = torch.empty(2, 2, 3, 12)
    for i in range(2):
        for j in range(3):
            want_in[:, i, j] = torch.cat(
                [
                    x[:, 2 * i, 2 * j],
                    x[:, 2 * i + 1, 2 * j],
                    x[:, 2 * i, 2 * j + 1],
                    x[:, 2 * i + 1, 2 * j + 1],
                ],
                dim=-1,
            )
    with torch.no_grad():
        torch.testing.assert_close(pm(x), pm.reduction(pm.norm(want_in)))
        odd = pm(torch.randn(1, 5, 3, 3))
    assert odd.shape == (1, 3, 2, 6)


def test_patch_embed_shapes():
    pe = PatchEmbed(in_chans=1, embed_dim=12, patch_size=4)
    assert pe(torch.randn(2, 1, 32, 18)).shape == (2, 8, 4, 12)


@pytest.mark.parametrize(
    "dim,depth,downsample,in_shape,out_shape,out_dim",
    [
        (8, 1, False, (2, 6, 5, 8), (2, 6, 5, 8), 8),
        (8, 2, True, (1, 7, 4, 8), (1, 4, 2, 16), 16),
        (12, 2, True, (3, 4, 4, 12), (3, 2, 2, 24), 24),
    ],
)
def test_vss_stage_shapes(dim, depth, downsample, in_shape, out_shape, out_dim):
    stage = VSSStage(dim, depth, downsample=downsample, d_state=4, drop_path=[0.0] * depth).eval()
    assert stage.out_dim == out_dim and len(stage.blocks) == depth
    with torch.no_grad():
        y = stage(torch.randn(*in_shape))
    assert y.shape == out_shape and y.dtype == torch.float32 and torch.isfinite(y).all()


def test_vss_stage_trains_and_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    stage = VSSStage(8, 2, downsample=True, d_state=4)
    x = torch.randn(2, 6, 6, 8)

    def grads(use_checkpoint: bool) -> dict[str, torch.Tensor]:
        stage.zero_grad()
        stage.use_checkpoint = use_checkpoint
        stage(x).square().mean().backward()
        return {k: p.grad.clone() for k, p in stage.named_parameters()}

    plain = grads(False)
    assert all(torch.isfinite(g).all() for g in plain.values())
    for name in ("blocks.0.ss2d.A_logs", "blocks.1.ss2d.Ds", "blocks.0.ss2d.dt_projs_bias"):
        assert plain[name].abs().sum() > 0, name
    ckpt = grads(True)
    for name, g in plain.items():
        torch.testing.assert_close(
            ckpt[name], g, rtol=1e-5, atol=1e-6, msg=lambda s, name=name: f"{name}: {s}"
        )


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="even"):
        VSSBlock(7)
    with pytest.raises(ValueError, match="drop_path"):
        VSSStage(8, 2, drop_path=[0.1])
    with pytest.raises(ValueError, match="backend"):
        SS2D(8, scan_backend="triton")
    with pytest.raises(ValueError, match="odd"):
        SS2D(8, d_conv=2)
