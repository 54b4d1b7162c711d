"""Benchmark: load a full-field four-view study to display-ready arrays (``engine.load_study``).

Baseline (same run, same files): ``pydicom.dcmread(path).pixel_array`` then a NumPy linear window
``clip((float32(x) - c) / w + 0.5, 0, 1) * 255 -> uint8`` with the file's WindowCenter/Width, per image.

Data: four 14-bit MONOCHROME2 views written to a temporary folder twice: uncompressed (Explicit VR
Little Endian) and RLE Lossless. Pixels come from ``training.phantom`` (size "full", its own image
size) when it imports and works, else from a built-in generator of ``--rows`` x ``--cols`` (default
4096 x 3328; breast-shaped 14-bit images: smooth tissue, power-law texture, detector noise, flat
background).

Timing: median wall time of ``--repeats`` runs after one warm-up, baseline and engine interleaved.
Memory: each method runs once more in a fresh subprocess that reports (a) the tracemalloc peak
(NumPy registers its buffers with tracemalloc, so this is the Python + NumPy allocation peak) and
(b) the RSS high-water mark minus the RSS before loading (``VmHWM - VmRSS`` from
``/proc/self/status``, the mark reset after a warm-up on a tiny study). Both are compared to the
decoded pixel bytes of the four images (``rows * cols * 2 * 4``).

Targets: engine time <= 1.3 x baseline; engine tracemalloc peak < 4 x decoded bytes.

Usage::

    .venv/bin/python bench/bench_io.py [--rows 4096 --cols 3328] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
WINDOW = (8192.0, 12000.0)  # centre, width written in the files


# --- data --------------------------------------------------------------------------------------


def _texture(rng: np.random.Generator, rows: int, cols: int, beta: float = 3.0) -> np.ndarray:
    """Power-law (1/f^beta) texture at 1/8 resolution, upsampled (cheap, smooth)."""
    r, c = max(rows // 8, 8), max(cols // 8, 8)
    fy = np.fft.fftfreq(r)[:, None]
    fx = np.fft.rfftfreq(c)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    spectrum = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f ** (beta / 2)
    spectrum[0, 0] = 0
    small = np.fft.irfft2(spectrum, s=(r, c))
    small = (small - small.mean()) / (small.std() + 1e-9)
    return np.kron(small, np.ones((8, 8)))[:rows, :cols]


def synthetic_view(rng: np.random.Generator, rows: int, cols: int, side: str, view: str) -> np.ndarray:
    """A breast-shaped 14-bit image (chest wall on the left for R, right for L)."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, ry, rx = rows * 0.5, rows * 0.42, cols * 0.78
    xx = x if side == "R" else (cols - 1 - x)
    rho = np.sqrt(((y - cy) / ry) ** 2 + (xx / rx) ** 2)
    inside = rho < 1.0
    thickness = np.sqrt(np.clip(1 - rho**2, 0, 1))
    tissue = 6000 + 5000 * thickness + 900 * _texture(rng, rows, cols).astype(np.float32) * thickness
    if view == "MLO":  # pectoral muscle triangle
        tissue += np.where(xx < (rows * 0.35 - y) * 0.6, 3000.0, 0.0).astype(np.float32)
    img = np.where(inside, tissue, 300.0) + rng.normal(0, 25, size=(rows, cols)).astype(np.float32)
    return np.clip(img, 0, 2**14 - 1).astype(np.uint16)


def _phantom_views(tmp: Path) -> dict[tuple[str, str], np.ndarray] | None:
    """The four standard views of one ``training.phantom`` study (size "full"), or None.

    The views are picked by ``engine.load_study`` itself (its four slots) and their stored values
    re-written by :func:`write_study`, so both data sets hold exactly the same pixels.
    """
    try:
        from training.phantom import write_phantom  # type: ignore[attr-defined]

        from engine.io.loader import load_study

        out = tmp / "phantom"
        write_phantom(out, 1, 0, size="full")
        folder = next(p.parent for p in sorted(out.rglob("*.dcm")))
        study = load_study(folder)
        views = {
            (key[0], key[2:]): study.views[key].stored.astype(np.uint16)
            for key in ("R-CC", "L-CC", "R-MLO", "L-MLO")
            if key in study.views
        }
        if len(views) == 4:
            return views
        print(f"# training.phantom study has only {sorted(study.views)}", file=sys.stderr)
    except Exception as exc:  # the phantom is optional here
        print(f"# training.phantom not used ({type(exc).__name__}: {exc})", file=sys.stderr)
    return None


def write_study(folder: Path, pixels: dict[tuple[str, str], np.ndarray], rle: bool) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import RLELossless, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    for (side, view), arr in pixels.items():
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid()
        ds.Modality = "MG"
        ds.ImageLaterality = side
        ds.ViewPosition = view
        ds.ImagerPixelSpacing = [0.07, 0.07]
        ds.EstimatedRadiographicMagnificationFactor = 1.08
        ds.WindowCenter, ds.WindowWidth = WINDOW
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.set_pixel_data(arr, "MONOCHROME2", 14)
        if rle:
            ds.compress(RLELossless, encoding_plugin="pylibjpeg")
        ds.save_as(folder / f"{side}{view}.dcm", enforce_file_format=True)


# --- the two methods -----------------------------------------------------------------------------


def baseline(folder: Path) -> list[np.ndarray]:
    import pydicom

    out = []
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        x = ds.pixel_array
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        y = np.clip((x.astype(np.float32) - c) / w + 0.5, 0.0, 1.0) * 255.0
        out.append(y.astype(np.uint8))
    return out


def engine_load(folder: Path):
    from engine.io.loader import load_study

    return load_study(folder)


def _memory_child(method: str, folder: str, warmup: str) -> None:
    """Run one method in this (fresh) process; print tracemalloc peak and RSS delta as JSON.

    RSS delta = VmHWM (high-water mark, reset after a warm-up on a tiny study) minus VmRSS before.
    """
    import gc
    import tracemalloc

    import pydicom  # noqa: F401  (import cost outside the measurement)

    import engine.io.loader  # noqa: F401

    def status_kb(key: str) -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(key))

    run = baseline if method == "baseline" else engine_load
    run(Path(warmup))  # imports decoder plugins etc. outside the measurement
    gc.collect()
    before = status_kb("VmRSS:")
    if status_kb("VmHWM:") > before:  # reset the high-water mark (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    tracemalloc.start()
    result = run(Path(folder))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    high = status_kb("VmHWM:")
    print(json.dumps({"tracemalloc_peak": peak, "rss_delta": (high - before) * 1024}))
    del result


def _memory(method: str, folder: Path, warmup: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-child", method, str(folder), str(warmup)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=3328)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-phantom", action="store_true", help="use the built-in generator only")
    parser.add_argument("--memory-child", nargs=3, metavar=("METHOD", "FOLDER", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(*args.memory_child)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_io_") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        pixels = _phantom_views(tmp) if not args.no_phantom else None
        source = "training.phantom (full)"
        if pixels is None:
            rng = np.random.default_rng(0)
            pixels = {(s, v): synthetic_view(rng, args.rows, args.cols, s, v) for s, v in VIEWS}
            source = "built-in 14-bit generator"
        folders = {"uncompressed": tmp / "plain", "RLE": tmp / "rle"}
        write_study(folders["uncompressed"], pixels, rle=False)
        write_study(folders["RLE"], pixels, rle=True)
        tiny = {k: v[:64, :48].copy() for k, v in pixels.items()}
        warmups = {"uncompressed": tmp / "tiny_plain", "RLE": tmp / "tiny_rle"}
        write_study(warmups["uncompressed"], tiny, rle=False)
        write_study(warmups["RLE"], tiny, rle=True)
        decoded_bytes = sum(a.nbytes for a in pixels.values())
        args.rows, args.cols = next(iter(pixels.values())).shape
        del pixels
        print(f"# data: {source}, {args.rows}x{args.cols} x4, written in {time.perf_counter() - t0:.1f} s")

        rows = []
        for label, folder in folders.items():
            # correctness: same display as the baseline up to rounding (float32 vs float64 maths)
            base_imgs = baseline(folder)
            study = engine_load(folder)
            ours = [study.views[f"{s}-{v}"].display for s, v in sorted(VIEWS)]
            max_diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(base_imgs, ours))
            del base_imgs, study, ours
            times = {"baseline": [], "engine": []}
            for _ in range(args.repeats):
                for name, fn in (("baseline", baseline), ("engine", engine_load)):
                    t = time.perf_counter()
                    result = fn(folder)
                    times[name].append(time.perf_counter() - t)
                    del result
            mem = {name: _memory(name, folder, warmups[label]) for name in ("baseline", "engine")}
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append(
                {
                    "data": label,
                    "baseline_s": med["baseline"],
                    "engine_s": med["engine"],
                    "ratio": med["engine"] / med["baseline"],
                    "max_abs_diff_vs_baseline": max_diff,
                    "baseline_peak_x": mem["baseline"]["tracemalloc_peak"] / decoded_bytes,
                    "engine_peak_x": mem["engine"]["tracemalloc_peak"] / decoded_bytes,
                    "engine_rss_delta_x": mem["engine"]["rss_delta"] / decoded_bytes,
                    "baseline_rss_delta_x": mem["baseline"]["rss_delta"] / decoded_bytes,
                }
            )

    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    print(f"# decoded pixel bytes (4 views): {decoded_bytes / 2**20:.1f} MiB; median of {args.repeats} runs")
    header = f"{'data':<13}{'baseline s':>11}{'engine s':>10}{'ratio':>7}{'diff':>6}{'peak/px':>9}{'(base)':>8}{'rss/px':>8}{'(base)':>8}"
    print(header)
    for r in rows:
        print(
            f"{r['data']:<13}{r['baseline_s']:>11.3f}{r['engine_s']:>10.3f}{r['ratio']:>7.2f}"
            f"{r['max_abs_diff_vs_baseline']:>6d}{r['engine_peak_x']:>9.2f}{r['baseline_peak_x']:>8.2f}"
            f"{r['engine_rss_delta_x']:>8.2f}{r['baseline_rss_delta_x']:>8.2f}"
        )
    ok = all(r["ratio"] <= 1.3 and r["engine_peak_x"] < 4.0 for r in rows)
    print(
        json.dumps(
            {
                "bench": "bench_io",
                "rows": args.rows,
                "cols": args.cols,
                "source": source,
                "results": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                "target_time_ratio": 1.3,
                "target_peak_x": 4.0,
                "met": ok,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
