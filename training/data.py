"""Training data: dataset adapter -> patient-level splits -> targets -> cached model tensors.

1. :func:`open_samples` opens the adapter a config names (``training.datasets``; the phantom can
   be generated on the fly) and :func:`split_samples` splits it at patient level
   (:func:`training.datasets.patient_split`).
2. :func:`study_targets` turns a study's per-breast labels into the class indices of the model's
   heads, side order ``(R, L)``; -1 where the loss and the metrics must ignore the breast.
3. :class:`TensorCache` runs the engine's own preprocessing (:class:`engine.preprocess.
   StudyPreprocessor`, the exact steps the shipped models see at inference) once per study and
   keeps the result in a memory-mapped ``.npy`` file (``float16`` by default), so epochs never
   decode DICOM again. The cache folder is keyed by the preprocessing and by the files (path,
   size, modification time) of the split, and is rebuilt when either changes.
4. :class:`FourViewDataset` serves ``(images, missing, targets)`` from the cache, augmented with
   per-sample seeds (:mod:`training.augment`), and :class:`EpochSampler` tells it the epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from engine.errors import MammoError
from engine.study import STANDARD_VIEWS, Study
from training.augment import Compose, FourViewSample, sample_seed
from training.datasets import DatasetAdapter, StudySample, open_dataset, patient_split

__all__ = [
    "TASK_CLASSES",
    "SPLIT_NAMES",
    "SplitData",
    "open_samples",
    "split_samples",
    "study_targets",
    "make_split",
    "data_fingerprint",
    "default_tensor_cache_dir",
    "prepare_study",
    "TensorCache",
    "LiveSource",
    "FourViewDataset",
    "EpochSampler",
    "worker_init",
]

logger = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
SIDES: tuple[str, ...] = ("R", "L")
#: Malignancy classes (seed 000, 3.1: normal and benign grouped as 0).
TASK_CLASSES: dict[str, list[str]] = {"malignancy": ["normal_or_benign", "malignant"]}
_CACHE_VERSION = 1


# --- samples, splits, targets --------------------------------------------------------------------


def open_samples(
    dataset: str, root: str | Path | None, options: Mapping[str, Any] | None = None
) -> tuple[DatasetAdapter, list[StudySample]]:
    """Open a dataset adapter and read its samples.

    Args:
        dataset: Adapter name (``"phantom"``, ``"cmmd"``, ...).
        root: Dataset folder; for the phantom None (or a folder without ``labels.csv``)
            generates ``options["studies"]`` studies.
        options: Adapter keyword options.

    Raises:
        DatasetError: The folder is not in the adapter's layout.
        ValueError: Unknown adapter.
    """
    adapter = open_dataset(dataset, root, **dict(options or {}))
    return adapter, adapter.samples()


def split_samples(
    samples: Sequence[StudySample], fractions: Sequence[float], seed: int
) -> dict[str, list[StudySample]]:
    """Patient-level ``train``/``val``/``test`` split (a 2-part split reuses ``val`` as ``test``)."""
    parts = patient_split(samples, tuple(fractions), seed=seed)
    out = {name: list(part) for name, part in zip(SPLIT_NAMES, parts)}
    if "test" not in out:
        out["test"] = out["val"]
    return out


def study_targets(
    sample: StudySample,
    tasks: Sequence[str],
    birads_classes: Sequence[int],
    outside_birads: str = "exclude",
) -> dict[str, np.ndarray]:
    """Class indices of the heads for one study, sides ``(R, L)``; -1 = ignored.

    A breast is ignored (-1 for every task) when neither of its views is in the study or the
    dataset has no label for it (seed 000, 3.1). Malignancy: 1 malignant, 0 normal or benign,
    -1 unknown pathology. BI-RADS: the index of its category in ``birads_classes``; a category
    outside the set (or BI-RADS 0/6) is ignored, and with ``outside_birads="exclude"`` the breast
    leaves the malignancy task too (the paper's BI-RADS subsets are subsets of the data, 4.2).

    Returns:
        ``{task: int64 (2,)}`` for each task.
    """
    out = {t: np.full(2, -1, dtype=np.int64) for t in tasks}
    for j, side in enumerate(SIDES):
        imaged = any(k in sample.images for k in (f"{side}-CC", f"{side}-MLO"))
        lab = sample.labels.get(side)
        if not imaged or lab is None:
            continue
        birads = -1
        excluded = False
        if lab.birads is not None:
            if lab.birads in birads_classes:
                birads = list(birads_classes).index(lab.birads)
            elif outside_birads == "exclude":
                excluded = True
        if excluded:
            continue
        if "malignancy" in out:
            out["malignancy"][j] = lab.malignant
        if "birads" in out:
            out["birads"][j] = birads
    return out


@dataclass
class SplitData:
    """The usable studies of one split and their targets.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        samples: Studies with at least one view and one known target.
        targets: ``{task: int64 (N, 2)}``.
        dropped: Studies of the split left out (no view, or nothing to learn from).
    """

    name: str
    samples: list[StudySample]
    targets: dict[str, np.ndarray]
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.samples)

    def counts(self) -> dict[str, dict[str, int]]:
        """Known labels per task and class index (for logs and the model card)."""
        out: dict[str, dict[str, int]] = {}
        for task, y in self.targets.items():
            known = y[y >= 0]
            out[task] = {str(int(c)): int((known == c).sum()) for c in np.unique(known)}
        return out


def make_split(
    name: str,
    samples: Sequence[StudySample],
    tasks: Sequence[str],
    birads_classes: Sequence[int],
    outside_birads: str = "exclude",
) -> SplitData:
    """Targets of a split's studies, leaving out those with no view or no known target."""
    keep: list[StudySample] = []
    rows: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for s in samples:
        if not s.images:
            continue
        t = study_targets(s, tasks, birads_classes, outside_birads)
        if not any((v >= 0).any() for v in t.values()):
            continue
        keep.append(s)
        for task in tasks:
            rows[task].append(t[task])
    targets = {
        t: np.stack(v).astype(np.int64) if v else np.zeros((0, 2), dtype=np.int64) for t, v in rows.items()
    }
    dropped = len(samples) - len(keep)
    if dropped:
        logger.info("%s split: %d of %d studies left out (no view or no usable label)", name, dropped, len(samples))
    return SplitData(name, keep, targets, dropped)


def data_fingerprint(samples: Sequence[StudySample]) -> str:
    """sha256 of the studies, their image file names and sizes and their labels.

    Independent of where the dataset lives: two copies of the same data give the same value (it
    goes into the model card).
    """
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda x: x.study_id):
        files = []
        for key in STANDARD_VIEWS:
            p = s.images.get(key)
            if p is not None:
                files.append([key, Path(p).name, Path(p).stat().st_size if Path(p).exists() else -1])
        labels = {
            side: [lab.pathology, lab.birads, lab.density, lab.age, lab.finding]
            for side, lab in sorted(s.labels.items())
        }
        h.update(json.dumps([s.study_id, s.patient_id, files, labels], default=str).encode())
    return h.hexdigest()


# --- preprocessing and the cache -----------------------------------------------------------------


def default_tensor_cache_dir() -> Path:
    """``$MAMMO_CACHE/tensors`` (default ``~/.cache/mammo-viewer/tensors``)."""
    from training.datasets.phantom import default_cache_dir

    return default_cache_dir() / "tensors"


def prepare_study(
    sample: StudySample, in_size: int, crop: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load a study's standard views and run the engine's preprocessing on them.

    The views are loaded with :func:`engine.io.loader.load_image` and placed in the slots the
    adapter gives; :class:`engine.preprocess.StudyPreprocessor` does the rest, exactly as
    ``engine.Engine`` does at inference.

    Returns:
        ``(images float32 (4, H, W), missing bool (4,), problems)``: a view that cannot be loaded
        is reported in ``problems`` (one line each, no patient data) and treated as missing.
    """
    from engine.io.loader import load_image
    from engine.preprocess import StudyPreprocessor

    study = Study(path=Path(next(iter(sample.images.values()))).parent, study_id=sample.study_id)
    problems: list[str] = []
    for key in STANDARD_VIEWS:
        path = sample.images.get(key)
        if path is None:
            continue
        try:
            study.views[key] = load_image(Path(path))
        except MammoError as err:
            problems.append(f"{key}: {err}")
    prepared = StudyPreprocessor(in_size, crop=crop)(study)
    return prepared.images[:, 0], prepared.missing, problems


def _prepare_many(args: tuple[list[tuple[int, StudySample]], int, bool]) -> list[tuple[int, np.ndarray, np.ndarray, list[str]]]:
    items, in_size, crop = args
    out = []
    for i, sample in items:
        images, missing, problems = prepare_study(sample, in_size, crop)
        out.append((i, images, missing, problems))
    return out


def _file_stamp(path: Path) -> list[Any]:
    try:
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), -1, -1]


class TensorCache:
    """Preprocessed four-view tensors of a list of studies, memory-mapped from disk.

    Layout of ``<cache_root>/<key>/``: ``images.npy`` ``(N, 4, H, W)`` (``float16``, or
    ``uint8`` levels of 1/255), ``missing.npy`` ``(N, 4)`` bool, ``index.json`` (study ids,
    preprocessing, problems) and ``complete`` (written last: a folder without it is rebuilt).

    Args:
        samples: The studies, in order.
        in_size: Model input side.
        cache_root: Folder of cache folders.
        crop: Breast-box cropping (engine.preprocess).
        dtype: ``"float16"`` or ``"uint8"``.
        workers: Processes used to build it.
    """

    def __init__(
        self,
        samples: Sequence[StudySample],
        in_size: int,
        cache_root: str | Path,
        *,
        crop: bool = True,
        dtype: str = "float16",
        workers: int = 1,
    ) -> None:
        from engine.preprocess import StudyPreprocessor

        if dtype not in ("float16", "uint8"):
            raise ValueError(f"cache dtype must be float16 or uint8, got {dtype!r}")
        self.samples = list(samples)
        self.in_size = int(in_size)
        self.crop = bool(crop)
        self.dtype = dtype
        self.workers = max(1, int(workers))
        self.spec = StudyPreprocessor(self.in_size, crop=self.crop).spec()
        self.key = self._key()
        self.path = Path(cache_root).expanduser() / self.key
        self._images: np.ndarray | None = None
        self._missing: np.ndarray | None = None

    def _key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"v": _CACHE_VERSION, "spec": self.spec, "dtype": self.dtype}, sort_keys=True).encode())
        for s in self.samples:
            stamps = [[k, *_file_stamp(Path(s.images[k]))] for k in STANDARD_VIEWS if k in s.images]
            h.update(json.dumps([s.study_id, stamps]).encode())
        return f"{self.in_size}px-{self.dtype}-n{len(self.samples)}-{h.hexdigest()[:20]}"

    @property
    def complete(self) -> bool:
        """True when the folder holds a finished cache."""
        return (self.path / "complete").is_file()

    def build(self, progress: bool = False) -> TensorCache:
        """Preprocess every study into the cache unless it is already complete; returns self."""
        if self.complete:
            logger.info("tensor cache: reusing %s", self.path)
            return self
        if self.path.exists():
            shutil.rmtree(self.path)
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        n, s = len(self.samples), self.in_size
        np_dtype = np.float16 if self.dtype == "float16" else np.uint8
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np_dtype, shape=(n, 4, s, s))
        missing = np.ones((n, 4), dtype=bool)
        problems: dict[str, list[str]] = {}
        indexed = list(enumerate(self.samples))
        chunks = [indexed[i : i + 4] for i in range(0, n, 4)]
        jobs = [(c, s, self.crop) for c in chunks]
        bar = _bar(n, "preprocessing", progress)
        if self.workers > 1 and len(chunks) > 1:
            import multiprocessing as mp

            with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as pool:
                for result in pool.map(_prepare_many, jobs):
                    self._store(result, images, missing, problems, np_dtype, bar)
        else:
            for job in jobs:
                self._store(_prepare_many(job), images, missing, problems, np_dtype, bar)
        if bar is not None:
            bar.close()
        images.flush()
        del images
        np.save(tmp / "missing.npy", missing)
        (tmp / "index.json").write_text(
            json.dumps(
                {
                    "version": _CACHE_VERSION,
                    "study_ids": [x.study_id for x in self.samples],
                    "preprocessing": self.spec,
                    "dtype": self.dtype,
                    "problems": problems,
                },
                indent=1,
            )
        )
        (tmp / "complete").write_text("ok\n")
        try:
            os.replace(tmp, self.path)
        except OSError:
            if not self.complete:  # not another process finishing the same cache first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        if problems:
            logger.warning("tensor cache: %d studies had unreadable views (treated as missing)", len(problems))
        logger.info("tensor cache: wrote %d studies to %s", n, self.path)
        return self

    def _store(self, result, images, missing, problems, np_dtype, bar) -> None:  # noqa: ANN001
        for i, arr, miss, probs in result:
            if np_dtype == np.uint8:
                images[i] = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
            else:
                images[i] = arr.astype(np.float16)
            missing[i] = miss
            if probs:
                problems[self.samples[i].study_id] = probs
            if bar is not None:
                bar.update(1)

    def _open(self) -> None:
        if self._images is None:
            if not self.complete:
                raise RuntimeError(f"tensor cache {self.path.name} is not built")
            self._images = np.load(self.path / "images.npy", mmap_mode="r")
            self._missing = np.load(self.path / "missing.npy")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images float32 (4, H, W) in [0, 1], missing bool (4,))`` of study ``i``."""
        self._open()
        raw = np.asarray(self._images[i])  # type: ignore[index]
        if raw.dtype == np.uint8:
            images = raw.astype(np.float32) * np.float32(1.0 / 255.0)
        else:
            images = raw.astype(np.float32)
        return images, np.array(self._missing[i], dtype=bool)  # type: ignore[index]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_images"] = None  # reopened in each DataLoader worker
        state["_missing"] = None
        return state


class LiveSource:
    """Same interface as :class:`TensorCache`, preprocessing every time (``data.cache = false``).

    Args:
        samples: The studies.
        in_size: Model input side.
        crop: Breast-box cropping.
    """

    def __init__(self, samples: Sequence[StudySample], in_size: int, crop: bool = True) -> None:
        self.samples = list(samples)
        self.in_size = int(in_size)
        self.crop = bool(crop)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        images, missing, problems = prepare_study(self.samples[i], self.in_size, self.crop)
        for p in problems:
            logger.warning("study #%d: %s", i, p)
        return images, missing


def _bar(total: int, desc: str, enabled: bool):  # noqa: ANN202
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="study", leave=False)


# --- torch dataset and sampler -------------------------------------------------------------------


class FourViewDataset(Dataset):
    """Studies as model input, augmented deterministically per (seed, epoch, index).

    Items are requested as ``(epoch, index)`` (see :class:`EpochSampler`) or as a plain index
    (epoch 0). Each item is a dict: ``images`` float32 ``(4, 1, H, W)``, ``missing`` bool
    ``(4,)``, ``targets`` ``{task: int64 (2,)}``, ``index`` int.

    Args:
        source: A :class:`TensorCache` or :class:`LiveSource`.
        targets: ``{task: (N, 2)}`` class indices.
        augment: The training transforms, or None.
        seed: Base seed of the augmentation.
    """

    def __init__(
        self,
        source: TensorCache | LiveSource,
        targets: Mapping[str, np.ndarray],
        augment: Compose | None = None,
        seed: int = 0,
    ) -> None:
        self.source = source
        self.targets = {k: np.asarray(v, dtype=np.int64) for k, v in targets.items()}
        self.augment = augment
        self.seed = int(seed)
        for k, v in self.targets.items():
            if len(v) != len(source):
                raise ValueError(f"{k}: {len(v)} targets for {len(source)} studies")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        epoch, i = item if isinstance(item, tuple) else (0, item)
        images, missing = self.source[i]
        sample = FourViewSample(images, missing, {k: v[i].copy() for k, v in self.targets.items()})
        if self.augment is not None:
            self.augment.set_random_state(sample_seed(self.seed, epoch, i))
            sample = self.augment(sample)
        return {
            "images": torch.from_numpy(np.ascontiguousarray(sample.images[:, None], dtype=np.float32)),
            "missing": torch.from_numpy(np.asarray(sample.missing, dtype=bool)),
            "targets": {k: torch.from_numpy(v) for k, v in sample.targets.items()},
            "index": i,
        }


class EpochSampler(Sampler):
    """Wraps a sampler (e.g. ``DistributedSampler``) and yields ``(epoch, index)`` pairs.

    The epoch travels with each index into the DataLoader's worker processes (which keep their
    own copy of the dataset), so the augmentation seed is right with persistent workers too.

    Args:
        sampler: Yields indices; its ``set_epoch`` is called when present.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.sampler:
            yield (self.epoch, int(i))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


def worker_init(_: int) -> None:
    """DataLoader worker set-up: one thread each for torch and OpenCV (the workers are many)."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
