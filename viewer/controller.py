"""StudyController: opens studies and runs the AI in workers, writing into the ViewerState.

The only viewer module that calls the engine. Work runs on two private pools: one for loading
(decode + display preparation, in a thread), one single-threaded pool whose worker drives the
AI child process (``viewer.ai_process``: torch never runs in the viewer's interpreter, so it
cannot hold the GIL against the event loop). Each request carries a generation number; a newer
request cancels the older one (cooperatively, through the engine's ``cancel`` callable) and
results of an outdated generation are dropped, so opening a study while the previous one is still
being scored never shows the wrong result.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, QTimer, Signal

import engine
from viewer.ai_process import AiOutcome, AiProcess
from viewer.imaging import PreparedImage, prepare_study
from viewer.state import Message
from viewer.workers import Worker, WorkerPool

if TYPE_CHECKING:
    from viewer.state import ViewerState

__all__ = ["StudyController", "sibling_studies", "installed_models", "load_and_prepare"]

logger = logging.getLogger(__name__)

#: Delay between a study on screen and the start of its AI run (lets the first paint happen).
_AI_START_DELAY_MS = 120


def installed_models() -> list[str]:
    """Names of the bundled models (``engine.list_models``; cheap, no torch import)."""
    try:
        return [card.name for card in engine.list_models()]
    except Exception as exc:  # a broken models folder must not stop the viewer
        logger.warning("could not list the installed models: %s", exc)
        return []


def sibling_studies(path: str | Path) -> list[Path]:
    """The study folders next to ``path`` (its parent's sub-folders, sorted by name).

    Hidden folders are skipped. ``path`` itself is included when it is a folder.
    """
    p = Path(path)
    parent = p.parent
    try:
        return sorted(
            (c for c in parent.iterdir() if c.is_dir() and not c.name.startswith(".")),
            key=lambda c: c.name.lower(),
        )
    except OSError:
        return []


def load_and_prepare(
    path: str | Path,
    *,
    cancel: Callable[[], bool],
    progress: Callable[[float, str], None],
) -> tuple[Any, dict[str, PreparedImage]]:
    """Worker function: ``engine.load_study`` then the display preparation of every image."""
    progress(-1.0, "reading files")
    study = engine.load_study(path)
    if cancel():
        raise engine.Cancelled(path, "opening cancelled")
    images = prepare_study(study, cancel=cancel, progress=lambda f, what: progress(f, f"preparing {what}"))
    if cancel():
        raise engine.Cancelled(path, "opening cancelled")
    return study, images


class StudyController(QObject):
    """Opens studies and scores them, in worker threads.

    Args:
        state: The viewer state it writes into.
        parent: Qt parent.

    Signals:
        study_loaded(str): A study finished loading (its path).
        load_failed(str): A study could not be opened (the one-line message).
        ai_finished: An AI run ended (result shown, error shown, or no model).
    """

    study_loaded = Signal(str)
    load_failed = Signal(str)
    ai_finished = Signal()

    def __init__(self, state: ViewerState, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.load_pool = WorkerPool(1, self)
        self.ai_pool = WorkerPool(1, self)
        self._ai = AiProcess()
        self._load_gen = 0
        self._ai_gen = 0
        self._closing = False
        self.ai_info: dict = {}
        state.models_changed.connect(self._on_models_changed)
        state.target_changed.connect(self._on_target_changed)
        self._scored_with: tuple[str | None, str, str] | None = None

    # ------------------------------------------------------------------ loading
    def open_study(self, path: str | Path) -> None:
        """Load a study folder (or file); cancels whatever was loading or scoring."""
        if self._closing:
            return
        path = str(Path(path).expanduser())
        self._load_gen += 1
        gen = self._load_gen
        self.load_pool.cancel_all()
        self._cancel_ai()
        self.state.clear_messages()
        self.state.set_ai_status("idle", "")
        self.state.set_loading(path)
        w = Worker(load_and_prepare, path, name="load study")
        w.signals.result.connect(lambda out, g=gen, p=path: self._on_loaded(g, p, out))
        w.signals.error.connect(lambda exc, g=gen, p=path: self._on_load_error(g, p, exc))
        self.load_pool.start(w)

    def _on_loaded(self, gen: int, path: str, out: tuple[Any, dict[str, PreparedImage]]) -> None:
        if gen != self._load_gen or self._closing:
            return
        study, images = out
        self.state.set_loading(None)
        self.state.set_study(study, images)
        msgs: list[Message] = []
        if study.errors:
            n = len(study.errors)
            msgs.append(Message("warning", f"{n} file{'s' if n > 1 else ''} could not be read:"))
            msgs += [Message("warning", f"  {e.relpath}: {e.message}") for e in study.errors[:8]]
            if n > 8:
                msgs.append(Message("warning", f"  ... and {n - 8} more"))
        for text in study.warnings:
            msgs.append(Message("info", text))
        self.state.set_messages(msgs)
        self.study_loaded.emit(path)
        # start the AI once the views have painted: on a 2-core machine the child process's start
        # (interpreter, torch) would otherwise compete with the first paint
        QTimer.singleShot(_AI_START_DELAY_MS, lambda g=gen: self._score_if_current(g))

    def _score_if_current(self, gen: int) -> None:
        if gen == self._load_gen and not self._closing:
            self.score()

    def _on_load_error(self, gen: int, path: str, exc: BaseException) -> None:
        if gen != self._load_gen or self._closing:
            return
        self.state.set_loading(None)
        if isinstance(exc, engine.MammoError):
            text = f"Could not open {Path(path).name}: {exc}"
        elif isinstance(exc, OSError):
            text = f"Could not open {Path(path).name}: {exc.strerror or exc}"
        else:
            logger.error("unexpected error opening a study", exc_info=exc)
            text = f"Could not open {Path(path).name}: unexpected {type(exc).__name__} (details in the log)"
        self.state.set_study(None)
        self.state.set_messages([Message("error", text)])
        self.state.set_ai_status("idle", "")
        self.load_failed.emit(text)

    # ------------------------------------------------------------------ AI
    def _cancel_ai(self) -> None:
        self._ai_gen += 1
        self.ai_pool.cancel_all()
        self._ai.cancel_all()

    def score(self) -> None:
        """Score the current study with the chosen model (cancels a run in progress)."""
        if self._closing:
            return
        self._cancel_ai()
        gen = self._ai_gen
        s = self.state
        if s.study is None:
            s.set_ai_status("idle", "")
            return
        if not s.models or s.model_name is None:
            s.set_result(None)
            s.set_ai_status("no_model", "No AI model installed")
            self.ai_finished.emit()
            return
        if not any(k in s.study.views for k in engine.STANDARD_VIEWS):
            s.set_result(None)
            text = "AI: this study has no standard mammography view (R-CC, L-CC, R-MLO, L-MLO) to score."
            s.set_ai_status("error", text)
            s.add_message("warning", text)
            self.ai_finished.emit()
            return
        s.set_result(None)
        s.set_ai_status("running", f"Scoring with {s.model_name}...", -1.0)
        self._scored_with = (s.model_name, s.device, s.target)
        flips = {k: bool(p.flipped) for k, p in s.images.items() if k in engine.STANDARD_VIEWS}
        w = Worker(self._ai.score, str(s.study.path), s.model_name, s.device, s.target, flips, name="score study")
        w.signals.result.connect(lambda out, g=gen: self._on_scored(g, out))
        w.signals.error.connect(lambda exc, g=gen: self._on_score_error(g, exc))
        w.signals.progress.connect(lambda f, what, g=gen: self._on_score_progress(g, f, what))
        self.ai_pool.start(w)

    def _on_score_progress(self, gen: int, fraction: float, what: str) -> None:
        if gen == self._ai_gen and self.state.ai_status == "running":
            label = {"preprocess": "preprocessing", "inference": "running the model", "gradcam": "Grad-CAM", "done": "done"}
            self.state.set_ai_status("running", f"{self.state.model_name}: {label.get(what, what)}", fraction)

    def _on_scored(self, gen: int, out: AiOutcome) -> None:
        if gen != self._ai_gen or self._closing:
            return
        self.ai_info = dict(out.info)
        self.state.set_targets(out.targets or ["malignancy"])
        self.state.set_result(out.result, out.heatmap_maps)
        t = out.result.timings.get("total", 0.0)
        self.state.set_ai_status("done", f"Scored in {t:.1f} s", 1.0)
        self.ai_finished.emit()

    def _on_score_error(self, gen: int, exc: BaseException) -> None:
        if gen != self._ai_gen or self._closing:
            return
        if isinstance(exc, engine.Cancelled):
            self.state.set_ai_status("cancelled", "AI run cancelled")
            return
        if isinstance(exc, (engine.MammoError, ValueError)):
            text = f"AI could not score this study: {exc}"
        else:
            logger.error("unexpected error while scoring", exc_info=exc)
            text = f"AI could not score this study: unexpected {type(exc).__name__} (details in the log)"
        self.state.set_result(None)
        self.state.set_ai_status("error", text)
        self.state.add_message("error", text)
        self.ai_finished.emit()

    def _on_models_changed(self) -> None:
        s = self.state
        if s.study is not None and self._scored_with is not None and self._scored_with[:2] != (s.model_name, s.device):
            self.score()

    def _on_target_changed(self) -> None:
        s = self.state
        if (
            s.study is not None
            and self._scored_with is not None
            and self._scored_with[2] != s.target
            and s.ai_status in ("done", "running")
        ):
            self.score()

    @property
    def busy(self) -> bool:
        """True while a load or an AI run is in progress."""
        return bool(self.load_pool.active or self.ai_pool.active)

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel everything and wait for the worker threads (called when the window closes)."""
        self._closing = True
        self._load_gen += 1
        self._ai_gen += 1
        self.load_pool.cancel_all()
        self.ai_pool.cancel_all()
        self._ai.close()
        return self.load_pool.wait(timeout_ms) and self.ai_pool.wait(timeout_ms)


def default_device() -> str:
    """``$MAMMO_DEVICE`` or ``"auto"``."""
    return os.environ.get("MAMMO_DEVICE", "auto")
