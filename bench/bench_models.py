"""Four-view model forward time on CPU (seed 000 family): one study, 512 x 512, 2 threads.

Usage::

    .venv/bin/python bench/bench_models.py                      # presets + hybrid variants
    .venv/bin/python bench/bench_models.py --size 512 --repeats 7 --only hybrid-vssm-shared

Each model runs in a fresh subprocess (so peak RSS is its own): build, eval, warm up, then time

- ``forward``: ``model(images, missing)`` under ``torch.inference_mode()``, B = 1 (four views);
- ``cam2``: what Grad-CAM for both breasts costs, done as ``engine.gradcam`` does it: parameters
  frozen, hooks on ``cam_layers()`` that return ``output.detach().requires_grad_()``, one forward,
  then the gradients of ``malignancy_R[:, 1]`` and ``malignancy_L[:, 1]`` w.r.t. the four maps
  only (through fusion and heads), and the four CAMs;
- ``cam2_naive``: the textbook way (``loss.backward()`` with every parameter requiring grad, as
  ``pytorch-grad-cam`` does): both backward passes run through the whole encoder.

Named baseline: ``resnet18-shared`` (the paper's CNN baseline in the same framework), run in the
same invocation; the table gives each model's minimum forward time relative to the baseline's
minimum (the least disturbed runs on a shared machine). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASELINE = "resnet18-shared"

#: Extra hybrid variants (name -> overrides of hybrid-vssm-shared) to show the cost of the knobs.
VARIANTS: dict[str, dict] = {
    "hybrid d_state16 ratio2 (MedMamba defaults)": {"d_state": 16, "ssm_ratio": 2.0},
    "hybrid d_state8 ratio1": {"d_state": 8, "ssm_ratio": 1.0},
    "hybrid 2 blocks at 32x32 (256 ch)": {"vssm_depths": (2,), "vssm_dims": (256,)},
}


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _time(fn, warmup: int, repeats: int) -> dict[str, float]:
    """Wall (median, min) and process CPU (median) seconds of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "cpu_median_s": statistics.median(cpu),
    }


def worker(name: str, size: int, threads: int, repeats: int) -> dict:
    """Measure one model in this process (called in a subprocess)."""
    import torch

    from engine.models.registry import PRESETS, create_model, get_preset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if name in PRESETS:
        config = get_preset(name, in_size=size)
    else:
        config = get_preset("hybrid-vssm-shared", in_size=size, **VARIANTS[name])
    model = create_model(config).eval()
    images = torch.rand(1, 4, 1, size, size)
    missing = torch.zeros(1, 4, dtype=torch.bool)

    def forward():
        with torch.inference_mode():
            return model(images, missing)

    def cam(naive: bool):
        def run():
            maps = {}

            def hook_for(key):
                def hook(module, inputs, output):
                    if naive:
                        output.retain_grad()
                        maps[key] = output
                        return None
                    maps[key] = output.detach().requires_grad_()
                    return maps[key]

                return hook

            handles = [m.register_forward_hook(hook_for(k)) for k, m in model.cam_layers().items()]
            try:
                model.requires_grad_(naive)
                out = model(images, missing)
                cams = []
                for side in ("R", "L"):
                    target = out[f"malignancy_{side}"][:, 1].sum()
                    if naive:
                        model.zero_grad(set_to_none=True)
                        for a in maps.values():
                            a.grad = None
                        target.backward(retain_graph=side == "R")
                        grads = [a.grad for a in maps.values()]
                    else:
                        grads = torch.autograd.grad(
                            target, list(maps.values()), retain_graph=side == "R"
                        )
                    for a, g in zip(maps.values(), grads):
                        w = g.mean(dim=(2, 3), keepdim=True)
                        cams.append(torch.relu((w * a).sum(1)).detach())
                return cams
            finally:
                model.requires_grad_(True)
                for h in handles:
                    h.remove()

        return run

    res = {
        "name": name,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "forward": _time(forward, 2, repeats),
        "cam2": _time(cam(False), 1, max(3, repeats // 2)),
        "cam2_naive": _time(cam(True), 1, 3),
        "peak_rss_mb": _peak_rss_mb(),
    }
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", action="append", help="model name (repeatable)")
    parser.add_argument("--no-variants", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.threads, args.repeats)))
        return 0

    from engine.models.registry import PRESETS

    names = args.only or [BASELINE] + [n for n in PRESETS if n != BASELINE]
    if BASELINE not in names:
        names = [BASELINE, *names]
    if not args.only and not args.no_variants:
        names += list(VARIANTS)
    results = []
    for name in names:
        cmd = [sys.executable, __file__, "--worker", name, "--size", str(args.size),
               "--threads", str(args.threads), "--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = next(r for r in results if r["name"] == BASELINE)["forward"]["min_s"]
    print(f"four-view study, {args.size}x{args.size}, B=1, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, nproc={os.cpu_count()}")
    header = ("model", "params M", "forward s", "min s", "CPU s", "x baseline (min)", "cam2 s",
              "cam2 CPU s", "cam2_naive s", "peak RSS MB")
    print(" | ".join(header))
    for r in results:
        print(" | ".join([
            r["name"], f"{r['params_m']:.1f}", f"{r['forward']['median_s']:.3f}",
            f"{r['forward']['min_s']:.3f}", f"{r['forward']['cpu_median_s']:.3f}",
            f"{r['forward']['min_s'] / base:.2f}",
            f"{r['cam2']['median_s']:.3f}", f"{r['cam2']['cpu_median_s']:.3f}",
            f"{r['cam2_naive']['median_s']:.3f}",
            f"{r['peak_rss_mb']:.0f}",
        ]))
    print(json.dumps({"bench": "models", "size": args.size, "threads": args.threads,
                      "baseline": BASELINE, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
