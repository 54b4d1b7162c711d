"""Engine benchmarks on CPU (2 threads): selective scan and SS2D blocks.

Usage::

    .venv/bin/python bench/bench_engine.py                 # every part
    .venv/bin/python bench/bench_engine.py --part scan     # one part (repeatable)

Each part is one function ``bench_<part>(args) -> dict`` registered in :data:`PARTS`; it prints its
own table, and ``main`` prints one JSON line with every part's figures at the end.

Parts:

- ``scan``: selective scan at batch 4, dim 192, L 1024, N 16, float32 (softplus, delta bias, D),
  forward (no grad) and forward+backward, for our torch backend (``selective_scan_ref``, and its
  time-major entry used by SS2D) against two named baselines in the same run: the plain per-step
  loop (``selective_scan_ref_loop``) and mambapy's parallel scan ``pscan`` (Blelloch; optional:
  ``pip install --no-deps mambapy``; skipped with a message if absent).
- ``ss2d``: forward time (inference mode) of one SS2D and one MedMamba-style VSSBlock at
  (B=4, H=W=32, C=192) and (B=4, H=W=16, C=384), the VSSM stage sizes of the four-view model,
  plus the 32x32 block with smaller ``d_state`` / ``ssm_ratio``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.models.vssm import SS2D, VSSBlock  # noqa: E402
from engine.ssm import (  # noqa: E402
    selective_scan_ref,
    selective_scan_ref_loop,
    selective_scan_ref_time_major,
)


def timeit(fn: Callable[[], object], warmup: int, repeats: int) -> dict[str, float]:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` runs; seconds (median, min)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def timeit_interleaved(
    fns: dict[str, Callable[[], object]], warmup: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Time several functions round-robin (so load changes hit all alike); seconds per function."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {
        name: {"median_s": statistics.median(ts), "min_s": min(ts)} for name, ts in times.items()
    }


def machine() -> dict[str, object]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }


# --------------------------------------------------------------------------- selective scan


def _pscan_selective_scan(pscan: Callable, u, delta, A, B, C, D, delta_bias):
    """The same selective scan written with mambapy's ``pscan`` (its ``(B, L, D, N)`` layout)."""
    x = u.transpose(1, 2)
    dt = F.softplus(delta + delta_bias[:, None]).transpose(1, 2)  # (B, L, D)
    Bl = B.transpose(1, 2)  # (B, L, N)
    Cl = C.transpose(1, 2)
    deltaA = torch.exp(dt.unsqueeze(-1) * A)  # (B, L, D, N)
    BX = dt.unsqueeze(-1) * Bl.unsqueeze(2) * x.unsqueeze(-1)
    hs = pscan(deltaA, BX)
    y = (hs @ Cl.unsqueeze(-1)).squeeze(3) + D * x
    return y.transpose(1, 2)


def _scan_inputs(batch: int, dim: int, length: int, n_state: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(batch, dim, length, generator=gen),
        "delta": torch.randn(batch, dim, length, generator=gen) * 0.5,
        # S4D-real A = -(1..N) as SS2D initialises it; dt bias ~ softplus^-1(0.01).
        "A": -torch.arange(1, n_state + 1, dtype=torch.float32).repeat(dim, 1),
        "B": torch.randn(batch, n_state, length, generator=gen),
        "C": torch.randn(batch, n_state, length, generator=gen),
        "D": torch.ones(dim),
        "delta_bias": torch.full((dim,), -4.6),
    }


def bench_scan(args: argparse.Namespace) -> dict[str, object]:
    """Selective scan: ours vs the plain loop vs mambapy's pscan, forward and forward+backward."""
    batch, dim, length, n_state = 4, 192, 1024, 16
    inputs = _scan_inputs(batch, dim, length, n_state)
    grad_names = ("u", "delta", "A", "B", "C", "D", "delta_bias")

    def ours(**kw):
        return selective_scan_ref(**kw, delta_softplus=True)

    def ours_tm(u, delta, A, B, C, D, delta_bias):
        y = selective_scan_ref_time_major(
            u.permute(2, 0, 1),
            delta.permute(2, 0, 1),
            A,
            B.permute(2, 0, 1),
            C.permute(2, 0, 1),
            D,
            delta_bias=delta_bias,
            delta_softplus=True,
        )
        return y.permute(1, 2, 0)

    def loop(**kw):
        return selective_scan_ref_loop(**kw, delta_softplus=True)

    impls: dict[str, Callable] = {
        "ours: selective_scan_ref": ours,
        "ours: time-major entry (SS2D)": ours_tm,
        "baseline: plain loop (selective_scan_ref_loop)": loop,
    }
    try:
        from mambapy.pscan import pscan
    except Exception as exc:  # noqa: BLE001 - optional baseline
        print(
            f"[scan] mambapy not importable ({type(exc).__name__}: {exc}); "
            "pscan baseline skipped (pip install --no-deps mambapy)"
        )
    else:
        impls["baseline: mambapy pscan"] = lambda **kw: _pscan_selective_scan(pscan, **kw)

    with torch.no_grad():
        want = loop(**inputs)
        errors = {name: (fn(**inputs) - want).abs().max().item() for name, fn in impls.items()}
        t_fwd = timeit_interleaved(
            {name: (lambda fn=fn: fn(**inputs)) for name, fn in impls.items()},
            args.warmup,
            args.repeats,
        )

    def fwd_bwd(fn: Callable) -> Callable[[], None]:
        leaves = {k: v.clone().requires_grad_(k in grad_names) for k, v in inputs.items()}

        def run() -> None:
            fn(**leaves).sum().backward()
            for v in leaves.values():
                v.grad = None

        return run

    t_fb = timeit_interleaved(
        {name: fwd_bwd(fn) for name, fn in impls.items()}, args.warmup, args.repeats
    )
    rows = {
        name: {"fwd": t_fwd[name], "fwd_bwd": t_fb[name], "max_abs_diff_vs_loop": errors[name]}
        for name in impls
    }

    print(
        f"\nSelective scan, batch {batch}, dim {dim}, L {length}, N {n_state}, float32, "
        f"{torch.get_num_threads()} threads (median of {args.repeats}, run round-robin; min)"
    )
    header = f"{'implementation':48s} {'forward ms':>18s} {'fwd+bwd ms':>18s} {'max|diff|':>10s}"
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(
            f"{name:48s} {r['fwd']['median_s'] * 1e3:9.1f} ({r['fwd']['min_s'] * 1e3:6.1f})"
            f" {r['fwd_bwd']['median_s'] * 1e3:9.1f} ({r['fwd_bwd']['min_s'] * 1e3:6.1f})"
            f" {r['max_abs_diff_vs_loop']:10.1e}"
        )
    ours_fb = rows["ours: selective_scan_ref"]["fwd_bwd"]["median_s"]
    ours_f = rows["ours: selective_scan_ref"]["fwd"]["median_s"]
    speedups = {}
    for name, r in rows.items():
        if name.startswith("baseline"):
            speedups[name] = {
                "fwd": r["fwd"]["median_s"] / ours_f,
                "fwd_bwd": r["fwd_bwd"]["median_s"] / ours_fb,
            }
            print(
                f"speed-up of ours over {name[10:]}: forward {speedups[name]['fwd']:.1f}x, "
                f"forward+backward {speedups[name]['fwd_bwd']:.1f}x"
            )
    return {
        "shape": {"batch": batch, "dim": dim, "L": length, "N": n_state, "dtype": "float32"},
        "results": rows,
        "speedup_of_ours": speedups,
    }


# --------------------------------------------------------------------------- SS2D blocks


def bench_ss2d(args: argparse.Namespace) -> dict[str, object]:
    """Forward time of one SS2D and one VSSBlock at the four-view model's VSSM stage sizes.

    Default configuration (d_state 16, ssm_ratio 2, as MedMamba), then the VSSBlock at 32x32 with
    smaller state/expansion settings: the scan's cost is proportional to ``ssm_ratio * d_state``.
    """
    rows = {}
    print(
        f"\nSS2D / VSSBlock forward (inference mode, float32), "
        f"{torch.get_num_threads()} threads (median of {args.repeats}; min)"
    )
    header = (
        f"{'module':10s} {'input (B, H, W, C)':20s} {'d_state':>7s} {'ssm_ratio':>9s}"
        f" {'scan channels':>13s} {'forward ms':>18s}"
    )
    print(header)
    print("-" * len(header))
    cases = [
        (SS2D, (4, 32, 32, 192), 16, 2.0),
        (VSSBlock, (4, 32, 32, 192), 16, 2.0),
        (SS2D, (4, 16, 16, 384), 16, 2.0),
        (VSSBlock, (4, 16, 16, 384), 16, 2.0),
        (VSSBlock, (4, 32, 32, 192), 4, 2.0),
        (VSSBlock, (4, 32, 32, 192), 1, 1.0),
    ]
    for cls, shape, d_state, ratio in cases:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        module = cls(shape[-1], d_state=d_state, ssm_ratio=ratio).eval()
        ss2d = module if isinstance(module, SS2D) else module.ss2d
        with torch.inference_mode():
            t = timeit(lambda m=module, x=x: m(x), args.warmup, args.repeats)
        key = f"{cls.__name__} {'x'.join(map(str, shape))} d_state={d_state} ssm_ratio={ratio}"
        rows[key] = {**t, "scan_channels": 4 * ss2d.d_inner}
        print(
            f"{cls.__name__:10s} {str(shape):20s} {d_state:7d} {ratio:9.1f}"
            f" {4 * ss2d.d_inner:13d} {t['median_s'] * 1e3:9.1f} ({t['min_s'] * 1e3:6.1f})"
        )
    return {"results": rows}


#: Benchmark parts by name; each is ``fn(args) -> dict`` of JSON-able figures.
PARTS: dict[str, Callable[[argparse.Namespace], dict[str, object]]] = {
    "scan": bench_scan,
    "ss2d": bench_ss2d,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=sorted(PARTS), help="part(s) to run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out: dict[str, object] = {"bench": "engine", "machine": machine()}
    for part in args.part or list(PARTS):
        out[part] = PARTS[part](args)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
