"""Viewer speed: launch to the four full-field views painted, to the AI overlays shown, frame times.

Usage::

    .venv/bin/python bench/bench_viewer.py [--data STUDY_DIR] [--runs 3] [--frames 40] [--no-model]

What is measured (issue "Viewer", Speed section), on a four-view study of 4096 x 3328 DICOMs:

- **launch -> painted**: a fresh ``python`` process (interpreter start, imports, window, study
  loading in the worker thread, first paint of all four views), timed from just before the
  process is spawned to the end of the last view's first paint with an image.
- **launch -> AI shown**: the same run, until the AI result's heatmaps and contours are painted,
  with a model of the shipped architecture (``hybrid-vssm-shared``, 512 x 512 input, random
  weights written by this script: trained weights cost the same). Also reported: the longest
  gap between ticks of a 10 ms QTimer from launch to AI shown (the event loop's longest block),
  and the process's peak RSS (full-field study, pyramids and heatmaps loaded).
- **pan/zoom frame** and **W/L drag frame**: in this process, one synchronised change applied to
  all four views and painted synchronously (``repaint``), at fit and at 1:1 zoom.

Baseline ("naive pyqtgraph", same run, same data): what a direct pyqtgraph viewer does: load the
study on the GUI thread, put each view's full-resolution ``uint8`` display image in an
``ImageItem``, pan/zoom with ``setRange``, and for window/level recompute the whole image with
``engine.display.render`` and ``setImage`` it.

Prints a table and one JSON line. Qt runs offscreen (``QT_QPA_PLATFORM=offscreen``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

VIEWS = ("R-CC", "L-CC", "R-MLO", "L-MLO")
WINDOW_SIZE = (1600, 1000)


# --------------------------------------------------------------------------------------- data
def make_study(cache: Path) -> Path:
    """A four-view full-field study (the phantom's ``full`` size), written once into ``cache``."""
    study = cache / "study"
    if study.is_dir() and len(list(study.glob("*.dcm"))) == 4:
        return study
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / "phantom"
    try:
        from training.phantom.dataset import write_dataset

        write_dataset(tmp, studies=1, seed=11, size="full")
        src = sorted(p for p in tmp.iterdir() if p.is_dir() and p.name != "masks")[0]
        study.mkdir(exist_ok=True)
        for f in sorted(src.glob("MG_*.dcm")):
            shutil.copy2(f, study / f.name)
    except ImportError:
        sys.path.insert(0, str(REPO / "tests" / "viewer"))
        from study_factory import write_study

        write_study(study, shape=(4096, 3328), spacing_mm=0.07)
    shutil.rmtree(tmp, ignore_errors=True)
    return study


def make_model(models: Path) -> str:
    """The shipped architecture with seeded random weights, as a bundled model folder."""
    name = "bench-hybrid-vssm-shared"
    if (models / name / "model.json").is_file():
        return name
    import torch

    from engine.models.registry import create_model, get_preset
    from engine.weights import save_model

    torch.manual_seed(0)
    model = create_model(get_preset("hybrid-vssm-shared"), pretrained=False)
    card = {
        "name": name,
        "version": "bench",
        "description": "random weights of the shipped architecture, for timing only",
        "training": {"config": {"bench": True}, "command": "bench/bench_viewer.py"},
    }
    save_model(model, card, models / name)
    return name


# ------------------------------------------------------------------------------ child processes
def _child_viewer(study: str, t0: float, settings: str, with_model: bool) -> dict:
    """Run the real window (MainWindow + StudyController, as ``mammo-viewer STUDY`` does)."""
    import viewer  # noqa: F401  (applies the Qt binding fix first)
    from PySide6.QtCore import QEvent, QObject, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from viewer.app import _dark_palette
    from viewer.main_window import MainWindow

    app = QApplication([sys.argv[0]])
    app.setStyle("Fusion")
    _dark_palette(app)
    t_imports = time.time() - t0
    w = MainWindow(settings=QSettings(settings, QSettings.Format.IniFormat), device="cpu")
    w.resize(*WINDOW_SIZE)
    out: dict = {"imports_s": t_imports}
    painted: dict[str, float] = {}
    ticks: list[float] = []

    class PaintWatch(QObject):
        def eventFilter(self, obj, ev):  # noqa: N802
            if ev.type() == QEvent.Type.Paint:
                key = obj.parent().key
                view = w.grid.views[key]
                if key not in painted and view.image_item.image is not None:
                    # recorded once the paint (this event) has been processed
                    QTimer.singleShot(0, lambda k=key: painted.setdefault(k, time.time()))
            return False

    watch = PaintWatch()
    for v in w.grid.views.values():
        v.viewport().installEventFilter(watch)
    tick = QTimer()
    tick.setInterval(10)
    tick.timeout.connect(lambda: ticks.append(time.perf_counter()))

    def check_painted():
        if len(painted) == 4 and "painted_s" not in out:
            out["painted_s"] = max(painted.values()) - t0
            if not with_model:
                tick.stop()  # quitting closes the window: not part of the measurement
                app.quit()

    poll = QTimer()
    poll.setInterval(1)
    poll.timeout.connect(check_painted)
    poll.start()

    def on_ai():
        w.grid.render_now()
        for v in w.grid.views.values():
            v.viewport().repaint()
        out["ai_shown_s"] = time.time() - t0
        out["ai_status"] = w.state.ai_status
        r = w.state.result
        out["engine_timings"] = dict(r.timings) if r is not None else {}
        tick.stop()  # quitting closes the window (and ends the AI process): not measured
        QTimer.singleShot(0, app.quit)

    if with_model:
        w.controller.ai_finished.connect(on_ai)
    t_wall0, t_perf0 = time.time(), time.perf_counter()
    w.show()
    tick.start()
    w.open_study(study)
    QTimer.singleShot(300000, app.quit)
    app.exec()
    tick.stop()
    # tick times as seconds after launch
    offset = (t_wall0 - t0) - t_perf0
    gaps = [(b - a, a + offset) for a, b in zip(ticks, ticks[1:])]
    if gaps:
        worst = max(gaps)
        out["max_gap_ms"], out["max_gap_at_s"] = 1000 * worst[0], worst[1]
    # blocks once the study is on screen (the AI phase); the window's first show is excluded
    after = [g for g, at in gaps if "painted_s" in out and at >= out["painted_s"]]
    out["max_gap_after_paint_ms"] = 1000 * max(after) if after else None
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    w.close()  # ends the AI child process
    out["ai_child_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return out


def _child_naive(study: str, t0: float) -> dict:
    """Baseline: load on the GUI thread, full-resolution display images in plain ImageItems."""
    import pyqtgraph as pg
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QApplication

    import engine

    pg.setConfigOptions(imageAxisOrder="row-major")
    app = QApplication([sys.argv[0]])
    win = pg.GraphicsLayoutWidget()
    win.resize(*WINDOW_SIZE)
    win.show()
    app.processEvents()
    s = engine.load_study(study)
    for i, key in enumerate(VIEWS):
        vb = win.addViewBox(row=i // 2, col=i % 2, lockAspect=True, invertY=True)
        item = pg.ImageItem(s.views[key].display, levels=(0, 255))
        vb.addItem(item)
        vb.autoRange(padding=0)
    out: dict = {}

    class PaintWatch(QObject):
        def eventFilter(self, obj, ev):  # noqa: N802
            if ev.type() == QEvent.Type.Paint and "painted_s" not in out:
                QTimer.singleShot(0, lambda: (out.setdefault("painted_s", time.time() - t0), app.quit()))
            return False

    watch = PaintWatch()
    win.viewport().installEventFilter(watch)
    win.viewport().update()
    QTimer.singleShot(120000, app.quit)
    app.exec()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def run_child(mode: str, study: Path, env: dict, workdir: Path) -> dict:
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(study), repr(t0), str(workdir / "s.ini")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------ frame times
def _median_p95(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def frame_times(study: Path, frames: int, settings: Path) -> dict:
    """Pan/zoom and W/L frame times of the viewer and of the naive baseline, in this process."""
    import viewer  # noqa: F401
    import pyqtgraph as pg
    from PySide6.QtCore import QEventLoop, QSettings
    from PySide6.QtWidgets import QApplication

    import engine
    from engine.display import render
    from viewer.imaging import Viewport, pan_viewport, zoom_viewport
    from viewer.main_window import MainWindow
    from viewer.state import MG_GROUP

    app = QApplication.instance() or QApplication([sys.argv[0]])
    w = MainWindow(settings=QSettings(str(settings), QSettings.Format.IniFormat), device="cpu")
    w.resize(*WINDOW_SIZE)
    w.show()
    loop = QEventLoop()
    w.controller.ai_finished.connect(loop.quit)
    w.open_study(str(study))
    loop.exec()
    app.processEvents()
    views = list(w.grid.views.values())
    s = w.state

    def paint_all():
        for v in views:
            v.render_now()
            v.viewport().repaint()

    def timed(step) -> list[float]:
        out = []
        for i in range(frames + 3):
            t = time.perf_counter()
            step(i)
            paint_all()
            dt = time.perf_counter() - t
            if i >= 3:  # warm-up frames
                out.append(dt)
        return out

    res: dict = {}
    rcc = w.grid.views["R-CC"]
    fit = rcc.current_viewport()
    one = Viewport(fit.center_u * 0.5, fit.center_y, 1.0)

    def zoom_pan(base: Viewport):
        def step(i):
            vp = s.viewport(MG_GROUP) or base
            if i % 4 == 0:
                vp = zoom_viewport(vp, 1.1, vp.center_u, vp.center_y)
            elif i % 4 == 2:
                vp = zoom_viewport(vp, 1 / 1.1, vp.center_u, vp.center_y)
            else:
                vp = pan_viewport(vp, 12 if i % 8 < 4 else -12, 8)
            s.set_viewport(MG_GROUP, vp)

        return step

    def wl(i):
        if i == 0:
            s.begin_window_drag("R-CC")
        s.drag_window(3.0 * i, 2.0 * i)

    s.set_viewport(MG_GROUP, fit)
    res["viewer_panzoom_fit"] = timed(zoom_pan(fit))
    s.set_viewport(MG_GROUP, fit)
    res["viewer_wl_fit"] = timed(wl)
    s.set_viewport(MG_GROUP, one)
    paint_all()
    res["viewer_panzoom_1to1"] = timed(zoom_pan(one))
    s.set_viewport(MG_GROUP, one)
    res["viewer_wl_1to1"] = timed(wl)
    images = {k: s.images[k].image for k in VIEWS}
    w.close()
    app.processEvents()

    # baseline: full-resolution ImageItems
    pg.setConfigOptions(imageAxisOrder="row-major")
    win = pg.GraphicsLayoutWidget()
    win.resize(*WINDOW_SIZE)
    win.show()
    items, vbs = {}, {}
    for i, key in enumerate(VIEWS):
        vb = win.addViewBox(row=i // 2, col=i % 2, lockAspect=True, invertY=True)
        item = pg.ImageItem(images[key].display, levels=(0, 255))
        vb.addItem(item)
        vb.autoRange(padding=0)
        items[key], vbs[key] = item, vb
    app.processEvents()
    rows, cols = images["R-CC"].shape

    def base_paint():
        win.viewport().repaint()

    def base_timed(step) -> list[float]:
        out = []
        for i in range(frames + 3):
            t = time.perf_counter()
            step(i)
            base_paint()
            dt = time.perf_counter() - t
            if i >= 3:
                out.append(dt)
        return out

    def base_zoom(scale_px: float):
        def step(i):
            span = scale_px * (1.1 if i % 4 == 0 else 1.0)
            x0 = cols / 2 + (12 if i % 8 < 4 else -12) * (i % 3)
            for vb in vbs.values():
                vb.setRange(xRange=(x0 - span / 2, x0 + span / 2), yRange=(rows / 2 - span / 2, rows / 2 + span / 2), padding=0)

        return step

    c0, w0 = float(images["R-CC"].voi_presets[0].center), float(images["R-CC"].voi_presets[0].width)

    def base_wl(i):
        for key in VIEWS:
            img = images[key]
            p = img.voi_presets[0]
            arr = render(img, center=float(p.center) + 20.0 * i, width=float(p.width) * (1 + 0.01 * i))
            items[key].setImage(arr, autoLevels=False, levels=(0, 255))

    res["naive_panzoom_fit"] = base_timed(base_zoom(max(rows, cols)))
    res["naive_wl_fit"] = base_timed(base_wl)
    res["naive_panzoom_1to1"] = base_timed(base_zoom(WINDOW_SIZE[1] / 2))
    res["naive_wl_1to1"] = base_timed(base_wl)
    win.close()
    del c0, w0
    return {k: _median_p95(v) for k, v in res.items()}


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="four-view study folder (default: phantom, full size)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mammo-bench-viewer")
    p.add_argument("--runs", type=int, default=3, help="launch runs per mode after one warm-up")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--no-model", action="store_true", help="skip the launch -> AI measurement")
    p.add_argument("--child", nargs=4, metavar=("MODE", "STUDY", "T0", "SETTINGS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        mode, study, t0, settings = args.child
        if mode == "naive":
            out = _child_naive(study, float(t0))
        else:
            out = _child_viewer(study, float(t0), settings, with_model=(mode == "model"))
        print(json.dumps(out))
        return 0

    import torch

    torch.set_num_threads(2)
    study = args.data or make_study(args.cache)
    models = args.cache / "models"
    work = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(work), XDG_CONFIG_HOME=str(work / "cfg"))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    empty = work / "no-models"
    empty.mkdir()
    model_name = None if args.no_model else make_model(models)

    launch: dict[str, list[dict]] = {"naive": [], "viewer": [], "model": []}
    modes = ["naive", "viewer"] + ([] if args.no_model else ["model"])
    for run in range(args.runs + 1):  # run 0 warms the page cache and the import caches
        for mode in modes:
            e = dict(env, MAMMO_MODELS_DIR=str(models if mode == "model" else empty))
            r = run_child(mode, study, e, work)
            if run > 0:
                launch[mode].append(r)

    os.environ["MAMMO_MODELS_DIR"] = str(empty if args.no_model else models)  # overlays shown while timing
    frames = frame_times(study, args.frames, work / "frames.ini")

    def med(mode: str, key: str) -> float | None:
        vals = [r[key] for r in launch[mode] if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    rows = [
        ("launch -> 4 views painted (s)", med("naive", "painted_s"), med("viewer", "painted_s"), "< 2.5"),
        ("launch -> painted, with model (s)", None, med("model", "painted_s"), "< 2.5"),
        ("launch -> AI overlays shown (s)", None, med("model", "ai_shown_s"), "-"),
        ("longest event-loop block, whole run (ms)", None, med("model", "max_gap_ms"), "<= 100"),
        ("  ... at (s after launch)", None, med("model", "max_gap_at_s"), "-"),
        ("longest block once views painted (ms)", None, med("model", "max_gap_after_paint_ms"), "<= 100"),
        ("peak RSS viewer process (MB)", med("naive", "peak_rss_mb"), med("model", "peak_rss_mb"), "-"),
        ("peak RSS viewer + AI process (MB)", None, _sum_med(launch["model"]), "< 2560"),
    ]
    for kind, target in (("panzoom", "< 30"), ("wl", "< 50")):
        for zoom in ("fit", "1to1"):
            b = frames[f"naive_{kind}_{zoom}"]
            v = frames[f"viewer_{kind}_{zoom}"]
            label = f"{'pan/zoom' if kind == 'panzoom' else 'W/L drag'} frame @ {zoom} (ms, median / p95)"
            rows.append((label, (1000 * b[0], 1000 * b[1]), (1000 * v[0], 1000 * v[1]), target))

    def fmt(x) -> str:
        if x is None:
            return "-"
        if isinstance(x, tuple):
            return f"{x[0]:.1f} / {x[1]:.1f}"
        return f"{x:.2f}" if x < 100 else f"{x:.0f}"

    print(f"machine: {platform.processor() or platform.machine()}, nproc={os.cpu_count()}, QT_QPA_PLATFORM=offscreen")
    print(f"study: {study} (4 views {'x'.join(map(str, _shape(study)))}), model: {model_name}")
    print(f"{'metric':48s} | {'naive pyqtgraph':>16s} | {'viewer':>16s} | target")
    print("-" * 100)
    for name, b, v, target in rows:
        print(f"{name:48s} | {fmt(b):>16s} | {fmt(v):>16s} | {target}")
    summary = {
        "bench": "viewer",
        "runs": args.runs,
        "frames": args.frames,
        "launch": {m: launch[m] for m in modes},
        "frames_ms": {k: [1000 * v[0], 1000 * v[1]] for k, v in frames.items()},
    }
    print(json.dumps(summary))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _sum_med(runs: list[dict]) -> float | None:
    vals = [r["peak_rss_mb"] + r.get("ai_child_peak_rss_mb", 0.0) for r in runs]
    return statistics.median(vals) if vals else None


def _shape(study: Path) -> tuple[int, int]:
    import pydicom

    f = sorted(study.glob("*.dcm"))[0]
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    return int(ds.Rows), int(ds.Columns)


if __name__ == "__main__":
    sys.exit(main())
