"""Benchmark: training throughput (studies per second) of the hybrid four-view model.

Three ways of running the same training step (:func:`training.loop.train_step`: forward, the
multi-task loss, backward, gradient clipping, AdamW) on the same phantom studies, with the same
augmentation, in the same process, interleaved round by round:

- ``plain`` (the named baseline): fp32 eager, every study decoded from DICOM and preprocessed
  by the engine in the main process at every step (``data.cache = false``), contiguous weights;
- ``cached``: the same, reading the preprocessed tensor cache (``training.data.TensorCache``);
- ``tuned``: the cache read by DataLoader worker processes (``--workers``), channels-last
  weights, optionally ``torch.compile`` (``--compile``), and on CUDA bf16 autocast.

Every variant first runs ``--warmup + 1`` untimed steps (oneDNN builds its primitives for each
new batch shape once per process); then each round runs ``--warmup`` untimed and ``--steps`` timed
steps per variant (CUDA is synchronised before the clock is read); the table reports the best and
the median round. The
phantom (``--studies`` four-view studies, ``demo`` size 1024 x 832) is written to a temporary
folder first; the cache build is timed separately (it happens once per data set).

Usage::

    .venv/bin/python bench/bench_train.py [--in-size 512] [--batch 4] [--steps 4] [--rounds 2]
        [--threads 2] [--workers 2] [--compile] [--device auto]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in-size", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--studies", type=int, default=12)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="torch.compile the tuned model")
    p.add_argument("--device", default="auto")
    p.add_argument("--phantom", help="existing phantom folder (default: generate one)")
    args = p.parse_args(argv)

    import torch

    from engine.inference import resolve_device
    from engine.models.registry import create_model, get_preset
    from training.augment import build_augment
    from training.config import AugmentSection
    from training.data import (
        EpochSampler,
        FourViewDataset,
        LiveSource,
        TensorCache,
        make_split,
        open_samples,
        worker_init,
    )
    from training.losses import MultiTaskLoss, inverse_frequency_weights
    from training.loop import train_step

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    tmp = tempfile.TemporaryDirectory(prefix="bench-train-")
    root = Path(args.phantom) if args.phantom else Path(tmp.name) / "phantom"
    t0 = time.perf_counter()
    _, samples = open_samples("phantom", root, {"studies": args.studies, "seed": 11, "size": "demo"})
    gen_s = time.perf_counter() - t0
    arch = get_preset("hybrid-vssm-shared", in_size=args.in_size)
    split = make_split("train", samples, arch.tasks, arch.birads_classes)
    t0 = time.perf_counter()
    cache = TensorCache(split.samples, args.in_size, Path(tmp.name) / "cache").build()
    cache_s = time.perf_counter() - t0
    live = LiveSource(split.samples, args.in_size)
    weights = {t: inverse_frequency_weights(split.targets[t], 2 if t == "malignancy" else 5) for t in arch.tasks}
    loss_fn = MultiTaskLoss(arch.tasks, None, weights)

    torch.manual_seed(0)
    base = create_model(arch, pretrained=False)

    def loader(source, workers: int):  # noqa: ANN001, ANN202
        ds = FourViewDataset(source, split.targets, build_augment(AugmentSection()), seed=0)
        sampler = EpochSampler(torch.utils.data.RandomSampler(ds, replacement=True, num_samples=10**6,
                                                              generator=torch.Generator().manual_seed(0)))  # fmt: skip
        kw = {}
        if workers > 0:
            import multiprocessing as mp

            mp.set_forkserver_preload(["training.data"])
            kw = dict(num_workers=workers, worker_init_fn=worker_init, persistent_workers=True, prefetch_factor=4,
                      multiprocessing_context=mp.get_context("forkserver"))  # fmt: skip
        return torch.utils.data.DataLoader(ds, batch_size=args.batch, sampler=sampler, pin_memory=cuda, **kw)

    variants = {}
    for name in ("plain", "cached", "tuned"):
        model = copy.deepcopy(base).to(device).train()
        if name == "tuned":
            model = model.to(memory_format=torch.channels_last)
        net = torch.compile(model) if (name == "tuned" and args.compile) else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        source = live if name == "plain" else cache
        dl = loader(source, args.workers if name == "tuned" else 0)
        variants[name] = {"model": model, "net": net, "opt": opt, "it": iter(dl), "amp": cuda and name == "tuned",
                          "times": []}  # fmt: skip

    def run(v: dict, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            batch = next(v["it"])
            images = batch["images"].to(device, non_blocking=True)
            missing = batch["missing"].to(device, non_blocking=True)
            targets = {k: t.to(device, non_blocking=True) for k, t in batch["targets"].items()}
            loss, _ = train_step(v["net"], v["opt"], loss_fn, images, missing, targets, amp=v["amp"],
                                 params=v["model"].parameters())  # fmt: skip
            if not torch.isfinite(loss):
                raise RuntimeError("non-finite loss")
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    # warm every variant before any timing: the first steps build oneDNN primitives for each new
    # shape (the number of present views varies per batch), a cache the variants then share
    for v in variants.values():
        run(v, args.warmup + 1)
    for r in range(args.rounds):
        for name, v in variants.items():
            run(v, args.warmup)
            v["times"].append(run(v, args.steps))

    studies = args.steps * args.batch
    rows = {}
    for name, v in variants.items():
        best, med = min(v["times"]), statistics.median(v["times"])
        rows[name] = {"studies_per_s_best": studies / best, "studies_per_s_median": studies / med}
    plain = rows["plain"]["studies_per_s_best"]
    desc = (
        f"tuned = cache + {args.workers} DataLoader workers + channels-last"
        + (" + torch.compile" if args.compile else "")
        + (" + bf16 autocast" if cuda else "")
    )
    print(f"hybrid-vssm-shared, {args.in_size} px, batch {args.batch}, {args.studies} phantom studies "
          f"(demo size); device {device}; threads {args.threads}; torch {torch.__version__}")  # fmt: skip
    print(f"machine: {_cpu_name()}" + (f", GPU {torch.cuda.get_device_name(device)}" if cuda else ""))
    print(f"phantom generation {gen_s:.1f} s; tensor cache build {cache_s:.1f} s ({len(split)} studies, once)")
    print(f"{args.rounds} interleaved rounds x {args.steps} timed steps after {args.warmup} warm-up; {desc}")
    print(f"{'variant':<10} {'studies/s best':>15} {'studies/s median':>17} {'x plain':>8}")
    for name, row in rows.items():
        print(f"{name:<10} {row['studies_per_s_best']:>15.3f} {row['studies_per_s_median']:>17.3f} "
              f"{row['studies_per_s_best'] / plain:>8.2f}")  # fmt: skip
    print(json.dumps({
        "bench": "train", "device": str(device), "threads": args.threads, "in_size": args.in_size,
        "batch": args.batch, "workers": args.workers, "compile": args.compile, "amp": "bf16" if cuda else "off",
        "cache_build_s": round(cache_s, 2),
        **{f"{k}_studies_per_s": round(v["studies_per_s_best"], 4) for k, v in rows.items()},
        "speedup_tuned_vs_plain": round(rows["tuned"]["studies_per_s_best"] / plain, 3),
    }))  # fmt: skip
    del variants
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
