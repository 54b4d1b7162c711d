"""Phantom benchmark: generation speed on one core, and the realism numbers of SPEC section 6.

Usage::

    .venv/bin/python bench/bench_phantom.py              # speed + realism
    .venv/bin/python bench/bench_phantom.py --part speed # one part

Speed (one thread: OpenCV limited to 1 thread, SciPy FFTs use ``workers=1``): median of repeated
runs after a warm-up, wall and CPU seconds, for

- ``plans x1000``: drawing the labels of 1,000 studies (no pixels);
- ``baseline: naive texture x4``: the textbook power-law texture for four demo-size views
  (NumPy float64 complex FFT of white noise times ``f**-1.5``), the named baseline: what a
  straightforward phantom spends on texture alone;
- ``render 4-view demo``: every pixel of a four-view demo-size study (1024 x 832);
- ``write 4-view demo``: the same plus DICOM files and masks;
- ``render 4-view + US + CESM demo`` and ``render 4-view full`` (4096 x 3328).

Realism: spectrum slope, CC/MLO nipple-distance agreement, mask-vs-ring contrast, dense fraction
and lesion CNR per density, label mix (measured on rendered pixels, as the tests do).
Prints tables and one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.phantom.dataset import write_study  # noqa: E402
from training.phantom.plan import _DENSE_RANGE, label_stats, plan_studies, plan_study  # noqa: E402
from training.phantom.render import _AIR, _FAT, _GAIN, _SPAN, render_mg, render_study  # noqa: E402
from training.phantom.texture import spectrum_slope  # noqa: E402


def machine() -> dict[str, object]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "nproc": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2)}


def timeit(fn: Callable[[int], object], warmup: int, repeats: int) -> dict[str, float]:
    """``fn(i)`` for ``warmup`` then ``repeats`` runs; median wall and CPU seconds."""
    for i in range(warmup):
        fn(i)
    wall, cpu = [], []
    for i in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(warmup + i)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "min_wall_s": min(wall)}


def naive_texture(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal((rows, cols))
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.fftfreq(cols)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    return np.real(np.fft.ifft2(np.fft.fft2(white) / f**1.5))


def bench_speed(args: argparse.Namespace) -> dict:
    cv2.setNumThreads(1)
    plans = [p for p in plan_studies(40, seed=1) if len(p.views_present()) == 4]
    tmp = Path(tempfile.mkdtemp(prefix="bench_phantom_"))
    rows = {}
    rows["plans x1000"] = timeit(lambda i: plan_studies(1000, seed=100 + i), 1, 5)
    rng = np.random.default_rng(0)
    rows["baseline: naive texture x4"] = timeit(
        lambda i: [naive_texture(1024, 832, rng) for _ in range(4)], 1, args.repeats
    )
    rows["render 4-view demo"] = timeit(lambda i: render_study(plans[i % len(plans)], "demo"), 2, args.repeats)
    rows["write 4-view demo"] = timeit(
        lambda i: write_study(tmp, plans[i % len(plans)], "demo"), 1, args.repeats
    )
    rows["render 4-view + US + CESM demo"] = timeit(
        lambda i: render_study(plans[i % len(plans)], "demo", with_us=True, with_cesm=True), 1, 3
    )
    rows["render 4-view full"] = timeit(lambda i: render_study(plans[i % len(plans)], "full"), 1, 2)
    base = rows["baseline: naive texture x4"]["cpu_s"]
    print(f"\nSpeed, one core ({machine()})")
    print(f"{'task':34s} {'wall s':>8s} {'cpu s':>8s} {'cpu / baseline':>15s}")
    for name, r in rows.items():
        print(f"{name:34s} {r['wall_s']:8.3f} {r['cpu_s']:8.3f} {r['cpu_s'] / base:15.2f}")
    return rows


def _ring(mask: np.ndarray, width_px: int) -> np.ndarray:
    k = 2 * max(width_px, 1) + 1
    grown = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return grown.astype(bool) & ~mask


def _cnr(image) -> float:
    ring = _ring(image.mask, int(round(3.0 / image.spacing_mm[0])))
    px = image.pixels.astype(np.float64)
    return float((px[image.mask].mean() - px[ring].mean()) / px[ring].std())


def bench_realism(args: argparse.Namespace) -> dict:
    out: dict[str, object] = {}
    # 1. spectrum slope of rendered parenchyma (normal CC views, 50 mm ROI, 0.1-1 cycles/mm)
    slopes = []
    for plan in plan_studies(60, seed=11):
        for side, b in plan.breasts.items():
            if b.lesion is not None or "CC" not in b.views:
                continue
            image = render_mg(plan, side, "CC", "demo")
            sp = image.spacing_mm[0]
            nx, ny = image.nipple
            cols = image.pixels.shape[1]
            c = int(nx / 2) if side == "L" else int((cols - 1 + nx) / 2)
            r, half = int(ny), int(25 / sp)
            if image.breast_mask[r - half : r + half, c - half : c + half].all():
                slopes.append(spectrum_slope(image.pixels[r - half : r + half, c - half : c + half], sp))
            break
        if len(slopes) >= 20:
            break
    out["spectrum_slope"] = {
        "mean": float(np.mean(slopes)),
        "min": float(np.min(slopes)),
        "max": float(np.max(slopes)),
        "n": len(slopes),
    }
    # 2. CC/MLO nipple distance (nipple found in the pixels), tiny size
    devs = []
    for plan in plan_studies(120, seed=5):
        for side, b in plan.breasts.items():
            if b.lesion is None or b.finding not in ("mass", "cyst") or len(b.views) < 2:
                continue
            d = []
            for view in ("CC", "MLO"):
                image = render_mg(plan, side, view, "tiny")
                breast = image.pixels > 600
                colsx = np.nonzero(breast.any(axis=0))[0]
                col = colsx.max() if side == "L" else colsx.min()
                row = np.nonzero(breast[:, col])[0].mean()
                ys, xs = np.nonzero(image.mask)
                d.append(float(np.hypot(xs.mean() - col, ys.mean() - row)) * image.spacing_mm[0])
            devs.append(abs(d[0] - d[1]) / np.mean(d))
    out["nipple_distance_rel_dev"] = {"max": float(np.max(devs)), "mean": float(np.mean(devs)), "n": len(devs)}
    # 3. masks vs ring for non-subtle masses in A/B breasts
    cnrs = []
    for plan in plan_studies(150, seed=5):
        for side, b in plan.breasts.items():
            if b.finding == "mass" and not b.lesion.subtle and plan.density in ("A", "B"):
                cnrs.extend(_cnr(render_mg(plan, side, v, "small")) for v in b.views)
    out["mass_mask_vs_ring_cnr"] = {"min": float(np.min(cnrs)), "max": float(np.max(cnrs)), "n": len(cnrs)}
    # 4. density: dense-pixel fraction and CNR of the same malignant masses
    base = plan_studies(6, seed=13)
    level = _AIR + _SPAN * (_FAT + _GAIN * 0.25)
    cases = []
    i = 0
    while len(cases) < 8:
        p = plan_study(21, i)
        i += 1
        for s, b in p.breasts.items():
            if b.pathology == "malignant" and b.finding == "mass" and not b.lesion.subtle and "CC" in b.views:
                cases.append((p, s))
                break
    dense, cnr_by = {}, {}
    for density in "ABCD":
        lo, hi = _DENSE_RANGE[density]
        fr = []
        for plan in base:
            plan = dataclasses.replace(plan, density=density, dense_fraction=(lo + hi) / 2)
            image = render_mg(plan, next(iter(plan.breasts)), "CC", "small")
            sp = image.spacing_mm[0]
            k = 2 * int(15 / sp) + 1
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
            interior = cv2.erode(image.breast_mask.astype(np.uint8), disc).astype(bool)
            fr.append(float((image.pixels[interior] > level).mean()))
        dense[density] = float(np.mean(fr))
        values = []
        for p, s in cases:
            q = dataclasses.replace(p, density=density, dense_fraction=(lo + hi) / 2)
            values.append(_cnr(render_mg(q, s, "CC", "small")))
        cnr_by[density] = float(np.mean(values))
    out["dense_fraction"] = dense
    out["malignant_mass_cnr"] = cnr_by
    # 5. labels
    draw = plan_studies(1000, seed=7)
    breasts = [b for p in draw for b in p.breasts.values()]
    high = [b for b in breasts if b.birads >= 4]
    mid = [b for b in breasts if b.birads in (2, 3)]
    out["labels"] = {
        "normal": sum(b.pathology == "normal" for b in breasts) / len(breasts),
        "benign": sum(b.pathology == "benign" for b in breasts) / len(breasts),
        "malignant": sum(b.pathology == "malignant" for b in breasts) / len(breasts),
        "birads45_malignant": sum(b.pathology == "malignant" for b in high) / len(high),
        "birads23_benign": sum(b.pathology == "benign" for b in mid) / len(mid),
        "discordant": sum(b.discordant for b in breasts) / len(breasts),
    }
    print("\nRealism")
    s = out["spectrum_slope"]
    print(
        f"spectrum slope (0.1-1 cyc/mm, {s['n']} CC ROIs): mean {s['mean']:.2f}, "
        f"min {s['min']:.2f}, max {s['max']:.2f}"
    )
    d = out["nipple_distance_rel_dev"]
    print(
        f"CC vs MLO nipple distance ({d['n']} masses, tiny): max rel. deviation "
        f"{100 * d['max']:.1f} %, mean {100 * d['mean']:.1f} %"
    )
    m = out["mass_mask_vs_ring_cnr"]
    print(f"mask vs 3 mm ring, non-subtle masses in A/B ({m['n']} images): CNR {m['min']:.2f} .. {m['max']:.2f}")
    print("density                A      B      C      D")
    print("dense-pixel fraction " + " ".join(f"{dense[k]:6.2f}" for k in "ABCD"))
    print("malignant mass CNR   " + " ".join(f"{cnr_by[k]:6.2f}" for k in "ABCD"))
    print()
    print(label_stats(draw))
    return out


PARTS = {"speed": bench_speed, "realism": bench_realism}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=sorted(PARTS))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results = {"machine": machine()}
    for name in args.part or list(PARTS):
        results[name] = PARTS[name](args)
    print(json.dumps({"bench": "phantom", **results}, default=float))


if __name__ == "__main__":
    main()
