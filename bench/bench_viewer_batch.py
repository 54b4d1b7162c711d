"""Benchmark: does the viewer stay responsive while it batch-scores a folder or exports DICOM, and
how fast does Cancel stop a batch?

Each measurement runs in a fresh interpreter (``QT_QPA_PLATFORM=offscreen``) with a 10 ms
``QTimer`` on the GUI thread; the longest gap between its ticks is how long the event loop was
blocked (SPEC section 8: at most 100 ms).

- **Batch.** ``--studies`` (12) demo-size phantom studies (four views, 1024 x 832), model with
  random weights: ``tiny`` (the viewer tests' ResNet-18 at 64 px: loading dominates) and
  ``hybrid-vssm-shared`` (the product's default architecture at 512 px on CPU: the model
  dominates). *Ours*: Tools > Batch score folder's runner (``viewer.batch_process``: the batch in a
  child process driven by a worker thread). *Baseline*: ``engine.batch.run_batch`` in a
  ``QThreadPool`` worker thread inside the viewer's process (what a dialog would do without a
  child). Both write a CSV with one loader thread; the child's start-up (interpreter, torch, model)
  is inside its wall time.
- **Cancel.** Ours only: Cancel pressed after study k (k = 1..``--cancels``) of a running batch;
  time from the click until the runner's ``finished`` signal, and whether the child stopped by
  itself (cooperative cancel) or was ended after the 0.6 s grace period.
- **DICOM export.** File > Export DICOM of the demo study after scoring it with ``tiny``: *ours*
  (``viewer.dicom_export_job``: a child process) against the *baseline* ``export_study`` in a
  worker thread of the viewer's process, each the first export of a fresh viewer (highdicom not
  yet imported), then a second export in the same viewer.

Usage::

    .venv/bin/python bench/bench_viewer_batch.py [--studies 12] [--models tiny,hybrid-vssm-shared]
        [--cancels 5] [--data /tmp/mammo-bench-viewer-batch]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# --- set-up (in the parent) ----------------------------------------------------------------------------


def _make_models(root: Path, names: list[str]) -> Path:
    from engine.models.registry import create_model, get_preset
    from engine.weights import save_model

    import torch

    for name in names:
        folder = root / name
        if (folder / "model.json").is_file():
            continue
        torch.manual_seed(0)
        if name == "tiny":
            cfg = get_preset("resnet18-shared", in_size=64, birads_classes=(1, 2, 3, 4, 5))
        else:
            cfg = get_preset(name)
        card = {"name": name, "version": "0.0.0", "description": "benchmark model, random weights",
                "training": {"config": {"bench": True}, "command": "bench/bench_viewer_batch.py"}}  # fmt: skip
        save_model(create_model(cfg, pretrained=False), card, folder)
    return root


def _make_studies(folder: Path, n: int) -> Path:
    from training.phantom import write_dataset

    if not (folder / "labels.csv").is_file() or len(list(folder.glob("P*"))) != n:
        write_dataset(folder, studies=n, seed=7, size="demo")
    for p in folder.rglob("*.dcm"):  # warm the page cache for every mode
        p.read_bytes()
    return folder


def _run_child(args: list[str], env: dict[str, str], timeout: float = 1800) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"worker {args} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(line[-1])


# --- workers (fresh interpreters) ----------------------------------------------------------------------


def _app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    return app, timer, ticks


def _gaps(ticks: list[float]) -> dict:
    import numpy as np

    g = np.diff(np.asarray(ticks)) * 1000.0 if len(ticks) > 1 else np.zeros(1)
    return {"max_gap_ms": float(g.max()), "p99_gap_ms": float(np.percentile(g, 99)), "gaps_over_100ms": int((g > 100).sum())}


def _wait(app, predicate, timeout_s: float) -> None:
    from PySide6.QtCore import QEventLoop

    t0 = time.perf_counter()
    while not predicate():
        app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents, 50)
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError("timed out")


def worker_batch(mode: str, studies: str, model: str, out_csv: str) -> dict:
    app, timer, ticks = _app()
    done: dict = {}
    if mode == "ours":
        from viewer.batch_process import BatchRequest
        from viewer.dialogs.batch_dialog import BatchRunner

        runner = BatchRunner()
        runner.finished.connect(lambda o: done.update(outcome=o))
        timer.start()
        t0 = time.perf_counter()
        runner.start(BatchRequest(studies, out_csv, model, "cpu", overwrite=True, workers=1))
        _wait(app, lambda: "outcome" in done, 1800)
        wall = time.perf_counter() - t0
        n = done["outcome"].scored
    else:
        from viewer.workers import Worker, WorkerPool

        def job(*, cancel, progress):  # noqa: ANN001
            from engine.batch import run_batch
            from engine.inference import Engine

            eng = Engine(model, device="cpu")
            return run_batch(studies, out_csv, eng, overwrite=True, workers=1, cancel=cancel)

        pool = WorkerPool(1)
        w = Worker(job, name="baseline batch")
        w.signals.result.connect(lambda s: done.update(outcome=s))
        w.signals.error.connect(lambda e: done.update(outcome=None, error=repr(e)))
        timer.start()
        t0 = time.perf_counter()
        pool.start(w)
        _wait(app, lambda: "outcome" in done, 1800)
        wall = time.perf_counter() - t0
        if done["outcome"] is None:
            raise RuntimeError(done.get("error"))
        n = done["outcome"].scored
        pool.wait()
    timer.stop()
    return {"mode": mode, "model": model, "studies": n, "wall_s": wall, "studies_per_s": n / wall, **_gaps(ticks)}


def worker_cancel(studies: str, model: str, out_csv: str, after: int) -> dict:
    app, timer, ticks = _app()
    from viewer.batch_process import BatchRequest
    from viewer.dialogs.batch_dialog import BatchRunner

    runner = BatchRunner()
    done: dict = {}
    runner.finished.connect(lambda o: done.update(outcome=o, t=time.perf_counter()))
    runner.start(BatchRequest(studies, out_csv, model, "cpu", overwrite=True, workers=1))
    _wait(app, lambda: runner.done >= after, 1800)
    t0 = time.perf_counter()
    runner.cancel()
    _wait(app, lambda: "outcome" in done, 60)
    o = done["outcome"]
    from engine.batch import read_results

    table = read_results(out_csv)
    return {"after": after, "cancel_s": done["t"] - t0, "killed": bool(o.killed), "done": o.done,
            "file_intact": bool(table.intact), "studies_in_file": len(table.studies)}  # fmt: skip


def worker_export(mode: str, study: str, out_dir: str) -> dict:
    app, timer, ticks = _app()
    from PySide6.QtCore import QSettings

    from viewer.main_window import MainWindow

    w = MainWindow(settings=QSettings(str(Path(out_dir) / "s.ini"), QSettings.Format.IniFormat), device="cpu")
    w.state.set_model("tiny")
    w.show()
    flag: dict = {}
    w.controller.ai_finished.connect(lambda: flag.update(ai=True))
    w.open_study(study)
    _wait(app, lambda: "ai" in flag, 600)
    if mode == "baseline":  # the engine's export in a worker thread of this process
        from viewer.workers import Worker

        def in_thread(study_path, result, target, *, cancel, progress):  # noqa: ANN001
            from engine.dicom_export import export_study

            return export_study(w.state.study, result, target)

        def export(target: Path) -> None:
            wk = Worker(in_thread, str(w.state.study.path), w.state.result, target, name="baseline export")
            wk.signals.result.connect(w._on_dicom_exported)
            wk.signals.error.connect(w._on_dicom_export_error)
            w.export_pool.start(wk)

    else:
        def export(target: Path) -> None:
            w.export_dicom(target)

    rows = []
    for i in (1, 2):
        res: dict = {}
        conn = w.dicom_export_finished.connect(lambda ok, text: res.update(ok=ok, text=text))
        ticks.clear()
        timer.start()
        t0 = time.perf_counter()
        export(Path(out_dir) / f"export{i}")
        _wait(app, lambda: "ok" in res, 600)
        wall = time.perf_counter() - t0
        timer.stop()
        w.dicom_export_finished.disconnect(conn)
        if not res["ok"]:
            raise RuntimeError(res["text"])
        rows.append({"mode": mode, "export": i, "wall_s": wall, **_gaps(ticks)})
    w.close()
    return {"rows": rows}


# --- main ------------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", type=int, default=12)
    p.add_argument("--models", default="tiny,hybrid-vssm-shared")
    p.add_argument("--cancels", type=int, default=5)
    p.add_argument("--data", type=Path, default=Path("/tmp/mammo-bench-viewer-batch"))
    p.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, *rest = args.worker
        fn = {"batch": worker_batch, "cancel": worker_cancel, "export": worker_export}[kind]
        if kind == "cancel":
            rest[-1] = int(rest[-1])
        print(json.dumps(fn(*rest)))
        return 0

    models = [m for m in args.models.split(",") if m]
    data = args.data
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    studies = _make_studies(data / "studies", args.studies)
    models_dir = _make_models(data / "models", sorted(set(models) | {"tiny"}))
    print(f"set-up {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    env = dict(os.environ, MAMMO_MODELS_DIR=str(models_dir), QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))  # fmt: skip

    batch_rows = []
    for model in models:
        for mode in ("baseline", "ours"):
            r = _run_child(["batch", mode, str(studies), model, str(data / f"{mode}-{model}.csv")], env)
            batch_rows.append(r)
            print(r, file=sys.stderr)
    cancel_rows = []
    for k in range(1, args.cancels + 1):
        r = _run_child(["cancel", str(studies), "tiny", str(data / "cancel.csv"), str(k)], env)
        cancel_rows.append(r)
        print(r, file=sys.stderr)
    export_rows = []
    demo = REPO / "resources" / "samples" / "demo" / "P0001"
    for mode in ("baseline", "ours"):
        out = data / f"export-{mode}"
        out.mkdir(exist_ok=True)
        export_rows += _run_child(["export", mode, str(demo), str(out)], env)["rows"]
        print(export_rows[-2:], file=sys.stderr)

    print(f"\nMachine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("\nBatch: event loop while scoring (10 ms timer on the GUI thread)")
    print("| model | mode | studies | wall s | studies/s | max gap ms | p99 gap ms | gaps > 100 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in batch_rows:
        print(f"| {r['model']} | {r['mode']} | {r['studies']} | {r['wall_s']:.1f} | {r['studies_per_s']:.2f} | "
              f"{r['max_gap_ms']:.0f} | {r['p99_gap_ms']:.0f} | {r['gaps_over_100ms']} |")  # fmt: skip
    print("\nCancel (ours, tiny): click -> finished")
    print("| after study | seconds | ended by | studies in file | file intact |")
    print("|---|---|---|---|---|")
    for r in cancel_rows:
        how = "kill after grace" if r["killed"] else "itself (cooperative)"
        print(f"| {r['after']} | {r['cancel_s']:.2f} | {how} | {r['studies_in_file']} | {r['file_intact']} |")
    print("\nDICOM export of the demo study (first export in a fresh viewer, then a second one)")
    print("| mode | export | wall s | max gap ms | p99 gap ms | gaps > 100 ms |")
    print("|---|---|---|---|---|---|")
    for r in export_rows:
        print(f"| {r['mode']} | {r['export']} | {r['wall_s']:.2f} | {r['max_gap_ms']:.0f} | {r['p99_gap_ms']:.0f} | "
              f"{r['gaps_over_100ms']} |")  # fmt: skip
    print(json.dumps({"bench": "viewer_batch", "batch": batch_rows, "cancel": cancel_rows, "export": export_rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
