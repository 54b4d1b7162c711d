"""Benchmark: scoring one loaded four-view full-field study on CPU (2 threads).

What is timed (``--repeats`` interleaved rounds after one warm-up of each case; the minimum, the
median and the median process CPU time are reported: on a shared machine the minimum is the least
disturbed figure, and interleaving makes background load hit every case alike):

- ``baseline forward``: the model's forward pass alone on ready ``(1, 4, 1, 512, 512)`` tensors in
  ``torch.inference_mode()`` (the named baseline: what scoring costs with no engine around it);
- ``preprocess``: ``StudyPreprocessor`` on the loaded study (4 x 4096 x 3328 views);
- ``score``: ``Engine.score(study, gradcam=False)`` including preprocessing;
- ``score + Grad-CAM``: ``Engine.score(study)`` (Grad-CAM for both breasts, contours), then the
  four original-grid heatmaps materialised (``result.heatmaps[view]`` for every view; the result
  builds them lazily);
- the per-stage breakdown reported by ``result.timings``.

The study is a full-field (4096 x 3328, 14-bit) four-view phantom study written as DICOM into a
temporary folder by ``training.phantom`` (the bench's own writer when the phantom is not importable;
``--study`` uses an existing folder) and loaded with ``engine.load_study``. The model is a bundled one when ``--model`` names it; otherwise
the ``hybrid-vssm-shared`` preset with random weights (same architecture and cost). Peak RSS is the
process's maximum resident set size at the end.

Usage::

    .venv/bin/python bench/bench_score.py [--model NAME] [--study DIR] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FULL_FIELD = (4096, 3328)


def _synthetic_breast(shape: tuple[int, int], right: bool, seed: int) -> np.ndarray:
    """14-bit full-field image: air, a textured half-ellipse breast, a lesion, a burnt-in label."""
    import cv2

    rng = np.random.default_rng(seed)
    rows, cols = shape
    small = (rows // 16, cols // 16)
    yy, xx = np.mgrid[0 : small[0], 0 : small[1]].astype(np.float32)
    cx = float(small[1] - 1) if right else 0.0
    r2 = ((yy - small[0] / 2) / (0.42 * small[0])) ** 2 + ((xx - cx) / (0.7 * small[1])) ** 2
    tissue = np.clip(1.0 - r2, 0, 1) ** 0.5
    texture = cv2.GaussianBlur(rng.normal(0, 1, small).astype(np.float32), (0, 0), 2.0)
    img_small = np.where(r2 <= 1.0, 5000 + 6000 * tissue + 900 * texture, 300.0)
    img = cv2.resize(img_small.astype(np.float32), (cols, rows), interpolation=cv2.INTER_LINEAR)
    img += rng.normal(0, 40, shape).astype(np.float32)
    ly, lx = int(0.45 * rows), int(0.2 * cols) if not right else int(0.8 * cols)
    cv2.circle(img, (lx, ly), 60, 13000.0, -1)
    label_c = int(0.88 * cols) if not right else int(0.05 * cols)
    img[150:350, label_c : label_c + 250] = 16000.0
    return np.clip(img, 0, 16383).astype(np.uint16)


def write_study(folder: Path) -> Path:
    """Write a four-view full-field MG study as DICOM (DX Mammography For Presentation)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    for i, key in enumerate(("R-CC", "L-CC", "R-MLO", "L-MLO")):
        lat, view = key.split("-")
        px = _synthetic_breast(FULL_FIELD, lat == "R", seed=i)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid()
        ds.Modality = "MG"
        ds.ImageLaterality = lat
        ds.ViewPosition = view
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = FULL_FIELD
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
        ds.PixelSpacing = [0.07, 0.07]
        ds.WindowCenter, ds.WindowWidth = 8000, 12000
        ds.PixelData = px.tobytes()
        ds.save_as(folder / f"{key}.dcm", enforce_file_format=True)
    return folder


def make_study(tmp: Path) -> tuple[Path, str]:
    """A full-field study folder: the phantom's when it is importable, else :func:`write_study`."""
    out = tmp / "phantom"
    # in a child process, so that the peak RSS measured here is the scoring's, not the phantom's
    cmd = [sys.executable, "-m", "training.phantom.cli", str(out), "--studies", "1", "--seed", "7",
           "--size", "full"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    folders = (
        [p for p in sorted(out.iterdir()) if p.is_dir() and any(p.glob("*.dcm"))]
        if out.is_dir()
        else []
    )
    if proc.returncode == 0 and folders:
        return folders[0], "training.phantom (--size full, seed 7)"
    why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    print(f"phantom unavailable ({why}); using the built-in writer")
    folder = write_study(tmp / "bench-study")
    return folder, "bench's built-in DICOM writer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="bundled model name (default: preset)")
    parser.add_argument("--preset", default="hybrid-vssm-shared")
    parser.add_argument("--study", type=Path, default=None, help="existing study folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import engine
    from engine.inference import Engine
    from engine.preprocess import StudyPreprocessor

    with tempfile.TemporaryDirectory() as tmp:
        if args.study:
            folder, source = args.study, str(args.study)
        else:
            folder, source = make_study(Path(tmp))
        t0 = time.perf_counter()
        study = engine.load_study(folder)
        load_s = time.perf_counter() - t0
        shapes = {k: study.views[k].shape for k in study.views}

        if args.model:
            eng = Engine(args.model, device="cpu")
            model_desc = f"{eng.name} {eng.version} (bundled)"
        else:
            from engine.models.registry import create_model, get_preset

            cfg = get_preset(args.preset)
            model = create_model(cfg, pretrained=False)
            card = {
                "name": args.preset,
                "version": "random-init",
                "architecture": cfg.to_dict(),
                "input": StudyPreprocessor(cfg.in_size).spec(),
                "classes": {"birads": list(cfg.birads_classes)},
            }
            eng = Engine.from_module(model, card, device="cpu")
            model_desc = f"{args.preset} preset, random weights (no bundled model yet)"

        h, w = eng.in_size
        images = torch.rand(1, 4, 1, h, w)
        missing = torch.zeros(1, 4, dtype=torch.bool)

        def forward_only():
            with torch.inference_mode():
                return eng.model(images, missing)

        def preprocess_only():
            return eng.preprocessor(study)

        def score_plain():
            eng.clear_cache()
            return eng.score(study, gradcam=False)

        def score_cam():
            eng.clear_cache()
            return eng.score(study)

        cases = {
            "forward": forward_only,
            "preprocess": preprocess_only,
            "score": score_plain,
            "score_gradcam": score_cam,
        }
        for fn in cases.values():  # warm-up (first-call imports, allocator)
            fn()
        wall: dict[str, list[float]] = {k: [] for k in [*cases, "maps", "score_gradcam_maps"]}
        cpu: dict[str, list[float]] = {k: [] for k in wall}
        last: dict[str, object] = {}
        for _ in range(args.repeats):  # interleaved rounds: contention hits every case alike
            for name, fn in cases.items():
                c0, t0 = time.process_time(), time.perf_counter()
                last[name] = fn()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
            r = last["score_gradcam"]
            c0, t0 = time.process_time(), time.perf_counter()
            for v in r.heatmaps:
                r.heatmaps[v]
            wall["maps"].append(time.perf_counter() - t0)
            cpu["maps"].append(time.process_time() - c0)
            wall["score_gradcam_maps"].append(wall["score_gradcam"][-1] + wall["maps"][-1])
            cpu["score_gradcam_maps"].append(cpu["score_gradcam"][-1] + cpu["maps"][-1])
        r_plain, r_cam = last["score"], last["score_gradcam"]

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    labels = {
        "forward": "baseline: model forward on ready tensors",
        "preprocess": "preprocess (4 full-field views)",
        "score": "score, no Grad-CAM (incl. preprocess)",
        "score_gradcam": "score + Grad-CAM both breasts",
        "maps": "4 heatmaps to original grids (lazy)",
        "score_gradcam_maps": "score + Grad-CAM + the 4 original maps",
    }
    stats = {
        k: {
            "min_s": min(wall[k]),
            "median_s": statistics.median(wall[k]),
            "cpu_median_s": statistics.median(cpu[k]),
        }
        for k in labels
    }
    base = stats["forward"]["min_s"]
    print(f"model: {model_desc}; input {h}x{w}; views {shapes}; threads {args.threads}")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"study: {source}; load (engine.load_study, not timed below): {load_s:.3f} s")
    print(f"{args.repeats} interleaved rounds after a warm-up; x baseline uses the minima")
    print(f"{'what':<42} {'min s':>7} {'median s':>9} {'CPU s':>7} {'x baseline':>10}")
    for k, name in labels.items():
        st = stats[k]
        print(
            f"{name:<42} {st['min_s']:7.3f} {st['median_s']:9.3f} {st['cpu_median_s']:7.3f} "
            f"{st['min_s'] / base:10.2f}"
        )
    print("breakdown of the last score + Grad-CAM (result.timings): " + ", ".join(
        f"{k} {v:.3f}" for k, v in r_cam.timings.items()))
    print("breakdown of the last score without Grad-CAM: " + ", ".join(
        f"{k} {v:.3f}" for k, v in r_plain.timings.items()))
    print(f"peak RSS: {rss_mb:.0f} MB")
    print(json.dumps({
        "bench": "score",
        "model": model_desc,
        "study": source,
        "in_size": [h, w],
        "threads": args.threads,
        "rounds": args.repeats,
        **{k: {kk: round(vv, 4) for kk, vv in st.items()} for k, st in stats.items()},
        "timings_gradcam_run": {k: round(v, 4) for k, v in r_cam.timings.items()},
        "timings_plain_run": {k: round(v, 4) for k, v in r_plain.timings.items()},
        "peak_rss_mb": round(rss_mb, 1),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
