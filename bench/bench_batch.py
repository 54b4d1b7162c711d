"""Benchmark: batch scoring (``engine.batch.run_batch``, what ``mammo-score`` runs) against a plain
sequential loop, and against loading alone.

Data: ``--studies`` (200) demo-size phantom studies (four MG views, 1024 x 832) and ``--full`` (20)
full-field ones (4096 x 3328), written once by ``training.phantom.write_dataset`` (seed 7) under
``--data`` and reused. Every file is read once before timing (warm page cache for every mode).

Models (random weights; nothing trained ships yet):

- ``tiny``: a registry four-view pure VSSM (8/16 channels, 64 px input) that scores a study in a few
  milliseconds: the model is never the bottleneck, as with a real model on a GPU. This is where the
  loaders are judged (target: the batch with workers reaches >= 90 % of the throughput of loading
  alone).
- ``hybrid-vssm-shared``: the product's default architecture at 512 px (``--models`` to choose),
  on CPU: the real cost of a batch on this machine.

Modes, all in the same run, same files, same Engine:

- ``load only``: ``for s in studies: engine.load_study(s)`` (the loading-alone ceiling);
- ``sequential`` (the named baseline): ``for s in studies: engine.score(engine.load_study(s))``;
- ``batch w=N thread|process``: ``run_batch(..., workers=N, loader=...)`` writing the CSV (one
  append + fsync per study), no Grad-CAM (as ``mammo-score`` without heatmap/JSON/DICOM outputs).

Memory: the RSS of this process (``/proc/self/statm``) after study 20 and after the last study of
each batch run (target: within 10 %); with process loaders the loaders' own memory is not in it.

Usage::

    .venv/bin/python bench/bench_batch.py [--studies 200] [--full 20] [--models tiny,hybrid-vssm-shared]
        [--data /tmp/mammo-bench-batch] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), cpu)
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores, {cpu}, {gpu}, load average {os.getloadavg()[0]:.1f}"


def _dataset(data: Path, name: str, studies: int, size: str) -> Path:
    from training.phantom import write_dataset

    folder = data / f"{name}-{studies}-seed7"
    info = folder / "phantom.json"
    if not (info.is_file() and json.loads(info.read_text()).get("studies") == studies):
        print(f"writing {studies} {size}-size phantom studies to {folder} ...", flush=True)
        write_dataset(folder, studies=studies, seed=7, size=size, workers=os.cpu_count() or 1)
    for f in folder.rglob("*.dcm"):  # warm the page cache for every mode alike
        f.read_bytes()
    return folder


def _engines(names: list[str], data: Path) -> dict[str, object]:
    import torch

    from engine.inference import Engine
    from engine.models.registry import create_model, get_preset
    from engine.weights import save_model

    out = {}
    for name in names:
        torch.manual_seed(0)
        if name == "tiny":
            cfg = get_preset("vssm-shared", vssm_depths=(1, 1), vssm_dims=(8, 16), patch_size=8, in_size=64,
                             fusion_hidden=8, d_state=4)  # fmt: skip
        else:
            cfg = get_preset(name)
        folder = data / "models" / name
        card = {"name": name, "version": "random-init", "description": "bench",
                "training": {"config": {"bench": True}, "command": "bench_batch"}}  # fmt: skip
        save_model(create_model(cfg, pretrained=False), card, folder)
        out[name] = Engine(folder, device="auto")
    return out


def _time_load(folders: list[Path]) -> float:
    from engine.io.loader import load_study

    t0 = time.perf_counter()
    for f in folders:
        load_study(f)
    return time.perf_counter() - t0


def _time_sequential(engine, folders: list[Path]) -> tuple[float, float, float]:
    from engine.io.loader import load_study

    rss20 = 0.0
    t0 = time.perf_counter()
    for i, f in enumerate(folders, 1):
        engine.score(load_study(f), gradcam=False)
        if i == min(20, len(folders)):
            rss20 = _rss_mb()
    return time.perf_counter() - t0, rss20, _rss_mb()


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (process loaders)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _time_batch(engine, root: Path, workers: int, loader: str, n: int) -> tuple[float, float, float, dict]:
    from engine.batch import run_batch

    marks: dict[str, float] = {}

    def progress(p) -> None:
        if p.done == min(20, n):
            marks["rss20"] = _rss_mb()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_batch(root, Path(tmp) / "r.csv", engine, workers=workers, loader=loader, progress=progress)
        seconds = time.perf_counter() - t0
    assert summary.done == n and summary.errors == 0, summary
    return seconds, marks.get("rss20", 0.0), _rss_mb(), summary.timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200, help="demo-size studies (default 200)")
    parser.add_argument("--full", type=int, default=20, help="full-field studies (default 20; 0 skips)")
    parser.add_argument("--models", default="tiny,hybrid-vssm-shared", help="comma-separated: tiny and/or presets")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "mammo-bench-batch")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)

    import logging
    import warnings

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)

    args.data.mkdir(parents=True, exist_ok=True)
    sets = [("demo", _dataset(args.data, "demo", args.studies, "demo"))]
    if args.full:
        sets.append(("full", _dataset(args.data, "full", args.full, "full")))
    engines = _engines([m.strip() for m in args.models.split(",") if m.strip()], args.data)
    from engine.batch import find_studies

    rows = []
    for size, root in sets:
        folders = [r.path for r in find_studies(root)]
        n = len(folders)
        _time_load(folders[:2])  # warm-up (imports, decoder set-up)
        cpu0 = _cpu_s()
        load_s = _time_load(folders)
        rows.append({"data": size, "model": "-", "mode": "load only", "studies": n, "seconds": load_s,
                     "rate": n / load_s, "cpu_per_wall": (_cpu_s() - cpu0) / load_s})  # fmt: skip
        print(f"{size}: load only {n / load_s:.2f} studies/s", flush=True)
        for name, engine in engines.items():
            _time_sequential(engine, folders[:2])  # warm-up
            # a tiny model needs no intra-op threads: two OpenMP threads would only spin against
            # the loaders for the two cores; a real model gets --threads
            threads = 1 if name == "tiny" else args.threads
            torch.set_num_threads(threads)
            modes = [("sequential", None, None), ("batch w=1 thread", 1, "thread"), ("batch w=2 thread", 2, "thread")]
            if name == "tiny":
                modes += [("batch w=0", 0, "thread"), ("batch w=2 process", 2, "process")]
            seq_rate = None
            for mode, workers, loader in modes:
                cpu0 = _cpu_s()
                timings: dict = {}
                if workers is None:
                    seconds, rss20, rss_end = _time_sequential(engine, folders)
                else:
                    seconds, rss20, rss_end, timings = _time_batch(engine, root, workers, loader, n)
                rate = n / seconds
                seq_rate = seq_rate or rate
                rows.append({"data": size, "model": name, "threads": threads, "mode": mode, "studies": n,
                             "seconds": seconds, "rate": rate, "vs_load": rate / (n / load_s),
                             "vs_sequential": rate / seq_rate, "cpu_per_wall": (_cpu_s() - cpu0) / seconds,
                             "wait_share": timings.get("load_wait", 0.0) / seconds if timings else None,
                             "rss20_mb": rss20, "rss_end_mb": rss_end,
                             "rss_growth": (rss_end / rss20 - 1.0) if rss20 else None})  # fmt: skip
                print(f"{size}: {name} {mode}: {rate:.2f} studies/s", flush=True)

    print()
    print("| data | model (threads) | mode | studies | s | studies/s | % of load only | x sequential | "
          "CPU/wall | waiting for loads | RSS@20 MB | RSS@end MB | RSS growth |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pct = f"{100 * r['vs_load']:.0f} %" if "vs_load" in r else "100 %"
        xs = f"{r['vs_sequential']:.2f}" if "vs_sequential" in r else "-"
        cpu = f"{r['cpu_per_wall']:.2f}" if "cpu_per_wall" in r else "-"
        wait = f"{100 * r['wait_share']:.0f} %" if r.get("wait_share") is not None else "-"
        rss = (f"{r['rss20_mb']:.0f} | {r['rss_end_mb']:.0f} | {100 * r['rss_growth']:+.1f} %"
               if r.get("rss_growth") is not None else "- | - | -")  # fmt: skip
        model = f"{r['model']} ({r['threads']})" if "threads" in r else "-"
        print(f"| {r['data']} | {model} | {r['mode']} | {r['studies']} | {r['seconds']:.1f} | "
              f"{r['rate']:.2f} | {pct} | {xs} | {cpu} | {wait} | {rss} |")  # fmt: skip
    print()
    print(json.dumps({"bench": "batch", "machine": _machine(), "torch_threads": args.threads, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
