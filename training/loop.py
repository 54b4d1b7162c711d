"""The training loop: one config -> a run folder with metrics, checkpoints and the test table.

Recipe (seed 000, sections 3.1 and 4; :mod:`training.config` holds the defaults): AdamW, the
class-weighted masked multi-task cross-entropy (:mod:`training.losses`), gradient-norm clipping,
ReduceLROnPlateau on the validation score (malignancy AUC + BI-RADS AUC,
:mod:`training.metrics`), augmentation (:mod:`training.augment`), best checkpoint.

A run folder ``RUN/`` holds::

    config.json        the resolved config (every value, defaults included)
    config.toml        a copy of the TOML file it came from (when there was one)
    metrics.jsonl      one JSON object per epoch (losses, validation table, lr, time)
    last.safetensors   weights after the last finished epoch
    last_state.pt      optimizer, scheduler, RNG states, epoch, best score (torch.save of plain
                       tensors and dicts, read back with weights_only=True)
    best.safetensors   weights of the best validation epoch
    test_metrics.json  the paper's table (and the full reports) of the best weights on the test split
    run.json           provenance: command, data (fingerprint, split sizes), machine, torch, times
    train.log          the log

Resuming: started again on the same folder (the same command), the loop continues after the last
finished epoch with the saved optimizer, scheduler and RNG states; the result is identical to an
uninterrupted run (the sampler and the augmentation are functions of the seed and the epoch).
Determinism: with ``train.deterministic`` (default) two CPU runs of a config give bit-identical
weights. On CUDA the loop uses bf16 autocast and channels-last memory (``train.amp``,
``train.channels_last``) and optionally ``torch.compile``; several processes under ``torchrun`` use
DistributedDataParallel (:mod:`training.distributed`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from engine.errors import MammoError
from training import distributed as D
from training.augment import build_augment
from training.config import ConfigError, TrainConfig
from training.data import (
    EpochSampler,
    FourViewDataset,
    LiveSource,
    SplitData,
    TensorCache,
    data_fingerprint,
    default_tensor_cache_dir,
    make_split,
    open_samples,
    split_samples,
    worker_init,
)
from training.losses import SIDES, MultiTaskLoss, inverse_frequency_weights
from training.metrics import Predictions, evaluate_predictions, jsonable

__all__ = [
    "RUN_FILES",
    "TrainingDivergedError",
    "RunResult",
    "Trainer",
    "train",
    "machine_info",
    "read_metrics",
    "state_to_safetensors",
    "tensors_sha256",
    "train_step",
]

logger = logging.getLogger(__name__)

#: File names inside a run folder.
RUN_FILES = {
    "config": "config.json",
    "config_toml": "config.toml",
    "metrics": "metrics.jsonl",
    "last": "last.safetensors",
    "state": "last_state.pt",
    "best": "best.safetensors",
    "test": "test_metrics.json",
    "run": "run.json",
    "log": "train.log",
}

#: Config keys that may change between an interrupted run and its resumption.
_RESUME_FREE = {
    ("train", "epochs"),
    ("train", "early_stop"),
    ("train", "num_workers"),
    ("train", "device"),
    ("train", "threads"),
    ("data", "root"),
    ("data", "cache_dir"),
    ("data", "preprocess_workers"),
}
_STATE_FORMAT = 1


class TrainingDivergedError(MammoError):
    """The training loss became NaN or infinite (the run folder keeps its last good checkpoint)."""


@dataclass
class RunResult:
    """What a finished run reports.

    Attributes:
        run_dir: The run folder.
        epochs_run: Last finished epoch.
        best_epoch: Epoch of the best checkpoint.
        best_score: Its monitored value.
        monitor: ``"auc_sum"`` or ``"neg_val_loss"`` (when no validation AUC is defined).
        test: ``test_metrics.json`` content.
        seconds: Training time over all sessions of the run.
        resumed_from: Epoch the last session resumed after (0 = fresh start).
    """

    run_dir: Path
    epochs_run: int
    best_epoch: int
    best_score: float
    monitor: str
    test: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    resumed_from: int = 0


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    """Where a run ran: OS, CPU model and count, GPU, Python and torch versions."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device) if device is not None else "cpu",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device if device is not None and device.type == "cuda" else 0)
        info["cuda"] = torch.version.cuda
    return info


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``RUN/metrics.jsonl`` (empty when absent)."""
    path = Path(run_dir) / RUN_FILES["metrics"]
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def state_to_safetensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """A model's state dict as contiguous CPU tensors (what safetensors stores)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict's content (names, dtypes, shapes, bytes), independent of file format.

    Two files with the same tensors give the same digest even when their safetensors headers
    differ (metadata order is not stable across processes).
    """
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(json.dumps([key, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _save_weights(model: nn.Module, path: Path, metadata: Mapping[str, str]) -> str:
    from safetensors.torch import save_file

    from engine.weights import sha256_file

    tmp = path.with_name(path.name + ".tmp")
    # one metadata key: safetensors writes several in a random order, and the bytes must not vary
    meta = {"mammo_train": json.dumps({k: str(v) for k, v in metadata.items()}, sort_keys=True)}
    save_file(state_to_safetensors(model), str(tmp), metadata=meta)
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest


def _load_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path), device="cpu")
    model.load_state_dict(state, strict=True)


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        path = (*prefix, key)
        if path[:2] in _RESUME_FREE or path in _RESUME_FREE:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.extend(_diff_keys(va, vb, path))
        elif va != vb:
            out.append(".".join(path))
    return out


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: MultiTaskLoss,
    images: torch.Tensor,
    missing: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    *,
    grad_clip: float = 1.0,
    amp: bool = False,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    world_size: int = 1,
    params: Any = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One optimisation step: forward (bf16 autocast when ``amp``), loss, backward, clip, step.

    Args:
        net: The model as trained (possibly DDP-wrapped or compiled).
        optimizer: Its optimizer.
        loss_fn: The multi-task loss.
        images: ``(B, 4, 1, H, W)`` on the model's device.
        missing: ``(B, 4)`` bool.
        targets: ``{task: (B, 2)}`` class indices.
        grad_clip: Max gradient norm (0: no clipping).
        amp: bf16 autocast of the forward pass on the images' device.
        all_reduce: Distributed sum (see :class:`training.losses.MultiTaskLoss`).
        world_size: Number of processes.
        params: Parameters to clip (default ``net.parameters()``).

    Returns:
        ``(detached loss, per-task losses)``.
    """
    ctx = torch.autocast(device_type=images.device.type, dtype=torch.bfloat16) if amp else nullcontext()
    with ctx:
        outputs = net(images, missing)
    loss, parts = loss_fn(outputs, targets, all_reduce=all_reduce, world_size=world_size)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params if params is not None else net.parameters(), grad_clip)
    optimizer.step()
    return loss.detach(), parts


class Trainer:
    """Trains one config into one run folder (see the module docstring).

    Args:
        config: The training config.
        out_dir: The run folder (created).
        data_root: Dataset folder (``--data``), overriding ``config.data.root``.
        command: The command line that started the run (recorded in run.json and the card).
        resume: Continue from ``RUN/last_state.pt`` when present (False starts over and
            replaces the folder's checkpoints).
        progress: Show tqdm progress bars (rank 0).
        on_epoch_end: Called on every process after each epoch's checkpoint is written, with
            ``(epoch, record)``; an exception it raises stops the run like an interruption.
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        *,
        data_root: str | Path | None = None,
        command: str = "",
        resume: bool = True,
        progress: bool = True,
        on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.out = Path(out_dir).expanduser().resolve()
        self.data_root = str(data_root) if data_root is not None else config.data.root
        self.command = command or self._equivalent_command()
        self.resume = resume
        self.progress = progress
        self.on_epoch_end = on_epoch_end
        self.arch = config.architecture()
        self.tasks = tuple(self.arch.tasks)
        self.birads_classes = tuple(self.arch.birads_classes)
        self.n_classes = {"malignancy": 2, "birads": len(self.birads_classes)}
        self.dist = D.DistInfo()

    def _equivalent_command(self) -> str:
        """The ``mammo-train`` command line equivalent to a run started from Python."""
        import shlex

        parts = ["mammo-train", self.config.source or str(self.out / RUN_FILES["config"]), "--out", str(self.out)]
        if self.data_root is not None:
            parts += ["--data", str(self.data_root)]
        return shlex.join(parts)

    # ------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Train, evaluate the best checkpoint on the test split, write the run folder."""
        prev_threads = torch.get_num_threads()
        prev_det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        prev_cudnn = torch.backends.cudnn.benchmark
        handler: logging.Handler | None = None
        prev_level = logging.NOTSET
        try:
            self._setup_runtime()
            if self.dist.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                handler = logging.FileHandler(self.out / RUN_FILES["log"], encoding="utf-8")
                handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
                log = logging.getLogger("training")
                log.addHandler(handler)
                prev_level = log.level
                if log.getEffectiveLevel() > logging.INFO:
                    log.setLevel(logging.INFO)
            self._setup_data()
            self._setup_model()
            start = self._start_or_resume()
            result = self._fit(start)
            self._final_test(result)
            return result
        finally:
            if handler is not None:
                logging.getLogger("training").removeHandler(handler)
                logging.getLogger("training").setLevel(prev_level)
                handler.close()
            # drop the loaders: their persistent worker processes exit with them
            self.train_loader = None  # type: ignore[assignment]
            self.eval_loaders = {}
            torch.set_num_threads(prev_threads)
            torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
            torch.backends.cudnn.benchmark = prev_cudnn
            D.shutdown(self.dist)

    # --- set-up --------------------------------------------------------------------------------
    def _setup_runtime(self) -> None:
        from engine.inference import resolve_device

        t = self.config.train
        device = resolve_device(t.device)
        self.dist = D.init_distributed(device.type)
        if device.type == "cuda" and self.dist.enabled:
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.deterministic:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = device.type == "cuda"
        cuda = device.type == "cuda"
        self.amp = t.amp == "bf16" or (t.amp == "auto" and cuda)
        self.channels_last = t.channels_last == "on" or (t.channels_last == "auto" and cuda)
        self.sync_bn = self.dist.enabled and (t.sync_bn == "on" or t.sync_bn == "auto")
        self.started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    def _main_first(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 first (it may write caches), then on the other ranks."""
        if self.dist.is_main:
            out = fn()
            D.barrier(self.dist)
            return out
        D.barrier(self.dist)
        return fn()

    def _setup_data(self) -> None:
        c = self.config.data
        options = dict(c.options)
        if c.dataset == "phantom" and self.data_root is None and "studies" not in options:
            raise ConfigError("[data] the phantom needs a folder (--data) or data.options.studies to generate")
        from training.datasets import ADAPTERS

        if c.dataset not in ADAPTERS:
            raise ConfigError(f"[data] unknown dataset {c.dataset!r}; known: {', '.join(sorted(ADAPTERS))}")
        adapter, samples = self._main_first(lambda: open_samples(c.dataset, self.data_root, options))
        self.adapter = adapter
        parts = split_samples(samples, c.split, c.split_seed)
        self.splits: dict[str, SplitData] = {
            name: make_split(name, part, self.tasks, self.birads_classes, c.outside_birads)
            for name, part in parts.items()
            if not (name == "test" and len(c.split) == 2)
        }
        if len(c.split) == 2:  # no test part: the table is reported on the validation split
            self.splits["test"] = self.splits["val"]
        if len(self.splits["train"]) == 0 or len(self.splits["val"]) == 0:
            raise ConfigError(
                f"[data] {c.dataset}: no usable studies in the train or validation split "
                f"({len(self.splits['train'])} / {len(self.splits['val'])})"
            )
        self.data_info: dict[str, Any] = {
            "dataset": c.dataset,
            "root": str(adapter.root),
            "licence": adapter.licence,
            "citation": adapter.citation,
            "url": adapter.url,
            "fingerprint": data_fingerprint(samples),
            "studies": len(samples),
            "patients": len({s.patient_id for s in samples}),
            "splits": {k: len(v) for k, v in self.splits.items()},
            "split_fractions": list(c.split),
            "split_seed": c.split_seed,
            "labels": {k: v.counts() for k, v in self.splits.items()},
        }
        generation = getattr(adapter, "generation", None)
        if generation:
            self.data_info["generation"] = generation
        cache_root = Path(c.cache_dir).expanduser() if c.cache_dir else default_tensor_cache_dir()
        in_size = self.arch.in_size

        def sources() -> dict[str, TensorCache | LiveSource]:
            out: dict[str, TensorCache | LiveSource] = {}
            for name, split in self.splits.items():
                if c.cache:
                    out[name] = TensorCache(
                        split.samples, in_size, cache_root, crop=c.crop, dtype=c.cache_dtype,
                        workers=c.preprocess_workers,
                    ).build(progress=self.progress and self.dist.is_main)  # fmt: skip
                else:
                    out[name] = LiveSource(split.samples, in_size, crop=c.crop)
            return out

        self.sources = self._main_first(sources)
        weights: dict[str, np.ndarray | None] = {}
        for task in self.tasks:
            if self.config.loss.class_weighting == "inverse-frequency":
                weights[task] = inverse_frequency_weights(self.splits["train"].targets[task], self.n_classes[task])
            else:
                weights[task] = None
        self.class_weights = weights
        self.loss_fn = MultiTaskLoss(self.tasks, self.config.loss.weights, weights)
        t = self.config.train
        augment = build_augment(self.config.augment)
        self.train_set = FourViewDataset(self.sources["train"], self.splits["train"].targets, augment, t.seed)
        self.train_sampler = EpochSampler(
            DistributedSampler(
                self.train_set, num_replicas=self.dist.world_size, rank=self.dist.rank,
                shuffle=True, seed=t.seed, drop_last=False,
            )
        )  # fmt: skip
        self.train_loader = self._loader(self.train_set, self.train_sampler, t.batch_size)
        self.eval_loaders: dict[str, DataLoader] = {}
        logger.info(
            "data: %s, %d studies -> train %d / val %d / test %d; class weights %s",
            c.dataset, len(samples), len(self.splits["train"]), len(self.splits["val"]),
            len(self.splits["test"]), {k: None if v is None else np.round(v, 3).tolist() for k, v in weights.items()},
        )  # fmt: skip

    def _loader(self, dataset: FourViewDataset, sampler: Any, batch_size: int) -> DataLoader:
        """A DataLoader; worker processes come from a fork server.

        Forking the trainer itself is not safe: OpenCV's and OpenMP's thread pools (used by the
        preprocessing and by torch in this process) do not survive a fork, and a worker that
        touches them can wait forever on a lock. The fork server is a clean single-threaded
        process with the data modules imported once, so workers still start quickly.
        """
        nw = self.config.train.num_workers
        context = None
        if nw > 0:
            import multiprocessing as mp

            if "forkserver" in mp.get_all_start_methods():
                mp.set_forkserver_preload(["training.data"])
                context = mp.get_context("forkserver")
            else:
                context = mp.get_context("spawn")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=nw,
            worker_init_fn=worker_init if nw > 0 else None,
            multiprocessing_context=context,
            # its own generator: the loader's per-iterator seed draw must not consume the global
            # RNG that dropout uses (the draw pattern differs with and without workers)
            generator=torch.Generator().manual_seed(self.config.train.seed),
            persistent_workers=nw > 0,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if nw > 0 else None,
            drop_last=False,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        """The (persistent) loader of a validation/test split, made once."""
        if split not in self.eval_loaders:
            data = self.splits[split]
            for name, loader in self.eval_loaders.items():
                if self.splits[name] is data:
                    self.eval_loaders[split] = loader
                    return loader
            dataset = FourViewDataset(self.sources[split], data.targets, None, 0)
            sampler = DistributedSampler(
                dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=False, drop_last=False
            )
            t = self.config.train
            self.eval_loaders[split] = self._loader(dataset, sampler, t.eval_batch_size or t.batch_size)
        return self.eval_loaders[split]

    def _setup_model(self) -> None:
        t = self.config.train
        from engine.models.registry import create_model

        torch.manual_seed(t.seed)
        model = create_model(self.arch, pretrained=True).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.sync_bn:
            model = D.convert_sync_batchnorm(model, self.device.type)
        self.model = model
        self.lr = self.config.learning_rate()
        o = self.config.optim
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=self.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
        )
        s = self.config.schedule
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=s.factor, patience=s.patience, threshold=s.threshold,
            threshold_mode="rel", min_lr=s.min_lr,
        )  # fmt: skip
        net: nn.Module = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(model, device_ids=ids)
        if t.compile:
            net = torch.compile(net)  # type: ignore[assignment]
        self.net = net
        # dropout streams: one per process, seeded (restored from the checkpoint on resume)
        torch.manual_seed(t.seed + 7919 * (self.dist.rank + 1))
        n_params = sum(p.numel() for p in model.parameters())
        logger.info(
            "model: %s (%s, %s), %.2f M parameters, lr %.1e, device %s, amp %s, channels_last %s, "
            "processes %d", self.config.model.preset, self.arch.encoder, self.arch.sharing, n_params / 1e6,
            self.lr, self.device, "bf16" if self.amp else "off", self.channels_last, self.dist.world_size,
        )  # fmt: skip

    # --- checkpoints ---------------------------------------------------------------------------
    def _paths(self, key: str) -> Path:
        return self.out / RUN_FILES[key]

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _start_or_resume(self) -> int:
        """Fresh start (returns 1) or resume after the last finished epoch (returns it + 1)."""
        cfg = self.config.to_dict()
        self.best_score = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.monitor = "auc_sum"
        self.seconds_before = 0.0
        self.first_command = self.command
        self.resumed_from = 0
        state_path = self._paths("state")
        have_state = state_path.is_file() and self._paths("last").is_file()
        if have_state and self.resume:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            if state.get("format") != _STATE_FORMAT:
                raise ConfigError(f"{state_path}: unknown checkpoint format; start over with --restart")
            diff = _diff_keys(state["config"], cfg)
            if diff:
                raise ConfigError(
                    f"{self.out.name}: holds a run of another config (differs in {', '.join(diff[:5])}); "
                    "use another --out or --restart"
                )
            if state["data_fingerprint"] != self.data_info["fingerprint"]:
                raise ConfigError(f"{self.out.name}: the data changed since this run started; use --restart")
            from engine.weights import sha256_file

            if sha256_file(self._paths("last")) != state["weights_sha256"]:
                raise ConfigError(
                    f"{self._paths('last')}: does not match {state_path.name} (interrupted while saving); "
                    "use --restart"
                )
            _load_weights(self.model, self._paths("last"))
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            rngs = state["rng"]
            if len(rngs) == self.dist.world_size:
                mine = rngs[self.dist.rank]
                torch.set_rng_state(mine["torch"])
                if "cuda" in mine and self.device.type == "cuda":
                    torch.cuda.set_rng_state(mine["cuda"], self.device)
            else:
                logger.warning("resume: saved with %d processes, now %d; dropout streams restart", len(rngs), self.dist.world_size)
            self.best_score = float(state["best_score"])
            self.best_epoch = int(state["best_epoch"])
            self.bad_epochs = int(state["bad_epochs"])
            self.monitor = str(state["monitor"])
            self.seconds_before = float(state["seconds"])
            self.first_command = str(state.get("command") or self.command)
            self.started = str(state.get("started") or self.started)
            epoch = int(state["epoch"])
            self.resumed_from = epoch
            if self.dist.is_main:
                self._truncate_metrics(epoch)
                self._settle_pending_best(self.best_epoch)
            logger.info("resuming %s after epoch %d (best %s at epoch %d)", self.out.name, epoch, self.best_score, self.best_epoch)
            return epoch + 1
        if self.dist.is_main:
            for key in ("metrics", "last", "state", "best", "test", "run"):
                self._paths(key).unlink(missing_ok=True)
            self._pending_best().unlink(missing_ok=True)
            _atomic_write_text(self._paths("config"), json.dumps(cfg, indent=2) + "\n")
            if self.config.source and Path(self.config.source).is_file():
                _atomic_write_text(self._paths("config_toml"), Path(self.config.source).read_text(encoding="utf-8"))
        D.barrier(self.dist)
        return 1

    def _truncate_metrics(self, epoch: int) -> None:
        records = [r for r in read_metrics(self.out) if int(r.get("epoch", 0)) <= epoch]
        _atomic_write_text(self._paths("metrics"), "".join(json.dumps(r) + "\n" for r in records))

    def _save_checkpoint(self, epoch: int, seconds: float) -> None:
        rngs = D.all_gather_objects(self._rng_state(), self.dist)
        if self.dist.is_main:
            digest = _save_weights(self.model, self._paths("last"), {"epoch": epoch, "kind": "last"})
            state = {
                "format": _STATE_FORMAT,
                "epoch": epoch,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rngs,
                "best_score": self.best_score,
                "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs,
                "monitor": self.monitor,
                "config": self.config.to_dict(),
                "data_fingerprint": self.data_info["fingerprint"],
                "weights_sha256": digest,
                "seconds": seconds,
                "command": self.first_command,
                "started": self.started,
            }
            tmp = self._paths("state").with_name(RUN_FILES["state"] + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, self._paths("state"))
            if self._pending_best().is_file():
                os.replace(self._pending_best(), self._paths("best"))
        D.barrier(self.dist)

    def _pending_best(self) -> Path:
        return self.out / (RUN_FILES["best"] + ".pending")

    def _settle_pending_best(self, best_epoch: int) -> None:
        """After an interruption: keep a pending best only if the checkpoint counts it as best."""
        pending = self._pending_best()
        if not pending.is_file():
            return
        from safetensors import safe_open

        with safe_open(str(pending), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("mammo_train", "{}"))
        if int(meta.get("epoch", -1)) == best_epoch:
            os.replace(pending, self._paths("best"))
        else:
            pending.unlink()

    # --- epochs --------------------------------------------------------------------------------
    def _autocast(self):  # noqa: ANN202
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _to_device(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        nb = self.device.type == "cuda"
        images = batch["images"].to(self.device, non_blocking=nb)
        missing = batch["missing"].to(self.device, non_blocking=nb)
        targets = {k: v.to(self.device, non_blocking=nb) for k, v in batch["targets"].items()}
        return images, missing, targets

    def _train_epoch(self, epoch: int, bar_factory: Callable[..., Any] | None) -> dict[str, Any]:
        t = self.config.train
        self.net.train()
        self.train_sampler.set_epoch(epoch)
        reduce = D.all_reduce_sum if self.dist.enabled else None
        sums = torch.zeros(1 + len(self.tasks), dtype=torch.float64)
        steps = 0
        studies = 0
        start = time.perf_counter()
        bar = bar_factory(total=len(self.train_loader), desc=f"epoch {epoch}", leave=False, unit="step") if bar_factory else None
        for batch in self.train_loader:
            images, missing, targets = self._to_device(batch)
            loss, parts = train_step(
                self.net, self.optimizer, self.loss_fn, images, missing, targets,
                grad_clip=t.grad_clip, amp=self.amp, all_reduce=reduce, world_size=self.dist.world_size,
                params=self.model.parameters(),
            )  # fmt: skip
            value = float(loss)
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"{self.out.name}: non-finite training loss at epoch {epoch}, step {steps + 1} "
                    f"(lr {self.optimizer.param_groups[0]['lr']:.1e}); the last checkpoint is kept - "
                    "lower optim.lr or check the data"
                )
            sums[0] += value
            for i, task in enumerate(self.tasks):
                sums[1 + i] += parts[task]
            steps += 1
            studies += int(images.shape[0])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{sums[0].item() / steps:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.1e}")
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - start
        if self.dist.enabled:
            sums = D.all_reduce_sum(sums)
            total = torch.tensor([float(studies)], dtype=torch.float64)
            studies = int(D.all_reduce_sum(total).item())
            sums[0] /= self.dist.world_size  # each process's loss is world_size x its share
        return {
            "train_loss": float(sums[0]) / max(steps, 1),
            "train_task_loss": {task: float(sums[1 + i]) / max(steps, 1) for i, task in enumerate(self.tasks)},
            "train_seconds": seconds,
            "train_studies_per_second": studies / seconds if seconds > 0 else float("nan"),
        }

    @torch.no_grad()
    def predict(self, split: str) -> Predictions:
        """Probabilities of the current weights on a split (gathered over processes)."""
        data = self.splits[split]
        loader = self._eval_loader(split)
        self.model.eval()
        rows: list[tuple[int, dict[str, np.ndarray], np.ndarray]] = []
        with torch.inference_mode():
            for batch in loader:
                images, missing, _ = self._to_device(batch)
                with self._autocast():
                    out = self.model(images, missing)
                probs = {
                    task: torch.stack([torch.softmax(out[f"{task}_{s}"].float(), dim=1) for s in SIDES], dim=1).cpu().numpy()
                    for task in self.tasks
                }
                att = out["attention"].float().cpu().numpy()
                for j, idx in enumerate(batch["index"].tolist()):
                    rows.append((idx, {k: v[j] for k, v in probs.items()}, att[j]))
        gathered = D.all_gather_objects(rows, self.dist)
        by_index: dict[int, tuple[dict[str, np.ndarray], np.ndarray]] = {}
        for part in gathered:
            for idx, p, a in part:
                by_index.setdefault(idx, (p, a))
        order = sorted(by_index)
        n = len(data)
        if order != list(range(n)):
            raise RuntimeError(f"{split}: predictions for {len(order)} of {n} studies")
        probs_all = {task: np.stack([by_index[i][0][task] for i in order]) for task in self.tasks}
        pred = Predictions(
            study_ids=[s.study_id for s in data.samples],
            probs=probs_all,
            targets={k: v.copy() for k, v in data.targets.items()},
            attention=np.stack([by_index[i][1] for i in order]) if order else np.zeros((0, 4)),
        )
        pred.loss = self._split_loss(pred)
        return pred

    def _split_loss(self, pred: Predictions) -> float:
        """The training loss over a whole split, from probabilities (float64)."""
        total = 0.0
        for task in self.tasks:
            w = self.class_weights[task]
            sides = []
            for j in range(2):
                y = pred.targets[task][:, j]
                p = pred.probs[task][:, j, :]
                known = y >= 0
                if not known.any():
                    continue
                yk = y[known]
                nll = -np.log(np.clip(p[known, yk], 1e-12, None))
                ww = np.ones_like(nll) if w is None else w[yk]
                sides.append(float((ww * nll).sum() / ww.sum()))
            if sides:
                total += self.loss_fn.task_weights[task] * float(np.mean(sides))
        return total

    def _fit(self, start: int) -> RunResult:
        t = self.config.train
        epochs = t.epochs
        main = self.dist.is_main
        bar_factory = None
        outer = None
        if self.progress and main:
            from tqdm.auto import tqdm

            bar_factory = tqdm
            outer = tqdm(total=epochs, initial=start - 1, desc=self.config.name or self.config.model.preset, unit="epoch")
        session_start = time.perf_counter()
        epoch = start - 1
        stopped = False
        if start == 1:
            # whether any validation AUC is defined depends only on the labels: fix the monitor once
            probe = evaluate_predictions(self._dummy_predictions("val"), self.birads_classes)
            self.monitor = "auc_sum" if not math.isnan(probe["score"]) else "neg_val_loss"
            if self.monitor != "auc_sum":
                logger.warning("validation split has no defined AUC; monitoring the validation loss instead")
        for epoch in range(start, epochs + 1):
            if t.early_stop and self.bad_epochs >= t.early_stop:
                stopped = True
                epoch -= 1
                break
            lr = self.optimizer.param_groups[0]["lr"]
            record: dict[str, Any] = {"epoch": epoch, "lr": lr}
            record.update(self._train_epoch(epoch, bar_factory))
            pred = self.predict("val")
            val = evaluate_predictions(pred, self.birads_classes)
            value = val["score"] if self.monitor == "auc_sum" else -val["loss"]
            self.scheduler.step(value)
            improved = value > self.best_score
            if improved:
                self.best_score, self.best_epoch, self.bad_epochs = value, epoch, 0
                if main:
                    # becomes best.safetensors together with the epoch's checkpoint (_save_checkpoint)
                    _save_weights(self.model, self._pending_best(), {"epoch": epoch, "kind": "best", "score": value})
            else:
                self.bad_epochs += 1
            seconds = self.seconds_before + (time.perf_counter() - session_start)
            record.update(
                {
                    "val_loss": val["loss"],
                    "val": val["table"],
                    "score": val["score"],
                    "monitor": self.monitor,
                    "monitor_value": value,
                    "best": improved,
                    "best_epoch": self.best_epoch,
                    "seconds": seconds,
                    "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                }
            )
            if main:
                with open(self._paths("metrics"), "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(jsonable(record)) + "\n")
            self._save_checkpoint(epoch, seconds)
            logger.info(
                "epoch %d: train loss %.4f, val loss %.4f, val %s, lr %.2e%s",
                epoch, record["train_loss"], val["loss"],
                {k: round(v, 4) for k, v in val["table"].items()}, lr, " (best)" if improved else "",
            )  # fmt: skip
            if outer is not None:
                outer.update(1)
                outer.set_postfix(loss=f"{record['train_loss']:.4f}", val=f"{value:.4f}", best=self.best_epoch)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, record)
        if outer is not None:
            outer.close()
        if stopped:
            logger.info("early stop: %d epochs without improvement", self.bad_epochs)
        seconds = self.seconds_before + (time.perf_counter() - session_start)
        return RunResult(
            run_dir=self.out,
            epochs_run=max(epoch, start - 1),
            best_epoch=self.best_epoch,
            best_score=self.best_score,
            monitor=self.monitor,
            seconds=seconds,
            resumed_from=self.resumed_from,
        )

    def _dummy_predictions(self, split: str) -> Predictions:
        """Uniform predictions on a split (to learn which metrics its labels define)."""
        data = self.splits[split]
        n = len(data)
        probs = {t: np.full((n, 2, self.n_classes[t]), 1.0 / self.n_classes[t]) for t in self.tasks}
        return Predictions([s.study_id for s in data.samples], probs, {k: v.copy() for k, v in data.targets.items()})

    def _final_test(self, result: RunResult) -> None:
        best = self._paths("best")
        D.barrier(self.dist)
        if best.is_file():
            _load_weights(self.model, best)
        pred = self.predict("test")
        report = evaluate_predictions(pred, self.birads_classes)
        same_as_val = self.splits["test"] is self.splits["val"]
        test = {
            "split": "val" if same_as_val else "test",
            "best_epoch": result.best_epoch,
            **report,
            "per_study": {
                "study_ids": pred.study_ids,
                "attention": pred.attention.round(6).tolist(),
                **{f"p_{task}": pred.probs[task].round(6).tolist() for task in self.tasks},
                **{f"y_{task}": pred.targets[task].tolist() for task in self.tasks},
            },
        }
        result.test = jsonable(test)
        if self.dist.is_main:
            _atomic_write_text(self._paths("test"), json.dumps(result.test, indent=1) + "\n")
            info = {
                "name": self.config.name,
                "command": self.first_command,
                "last_command": self.command,
                "config_source": self.config.source,
                "config": self.config.to_dict(),
                "architecture": self.arch.to_dict(),
                "lr": self.lr,
                "data": self.data_info,
                "class_weights": {k: None if v is None else v.tolist() for k, v in self.class_weights.items()},
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "best_score": result.best_score,
                "monitor": result.monitor,
                "seconds": result.seconds,
                "started": self.started,
                "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "processes": self.dist.world_size,
                "amp": "bf16" if self.amp else "off",
                "channels_last": self.channels_last,
                "compile": self.config.train.compile,
                "machine": machine_info(self.device),
                "torch_version": torch.__version__,
                "argv": sys.argv,
            }
            _atomic_write_text(self._paths("run"), json.dumps(jsonable(info), indent=2) + "\n")
        D.barrier(self.dist)
        logger.info("test (%s split, best epoch %d): %s", test["split"], result.best_epoch, report["table"])


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    command: str = "",
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> RunResult:
    """Train a config into a run folder (see :class:`Trainer`)."""
    return Trainer(
        config, out_dir, data_root=data_root, command=command, resume=resume, progress=progress,
        on_epoch_end=on_epoch_end,
    ).run()  # fmt: skip
