"""Worker: run a function on a QThreadPool with cooperative cancel, report through Qt signals.

The function runs in a pool thread and receives two plain callables, ``cancel()`` (True once the
worker was cancelled) and ``progress(fraction, what)``, so that the work itself (the engine) stays
Qt-free. Its signals live on a companion ``QObject`` created in the GUI thread, so connected slots
run in the GUI thread (queued connections). ``run()`` turns any exception into ``error``; nothing
escapes to the pool thread.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

__all__ = ["WorkerSignals", "Worker", "WorkerPool"]

logger = logging.getLogger(__name__)


class WorkerSignals(QObject):
    """Signals of a :class:`Worker`.

    Signals:
        started: The function began.
        progress(float, str): Fraction done (or -1 when unknown) and what is being done.
        result(object): The function's return value (not emitted when it raised or was cancelled).
        error(object): The exception it raised (the traceback goes to the log, not to the user).
        finished: Always last, whatever happened.
    """

    started = Signal()
    progress = Signal(float, str)
    result = Signal(object)
    error = Signal(object)
    finished = Signal()


class Worker(QRunnable):
    """A cancellable unit of work.

    Args:
        fn: Called as ``fn(*args, cancel=..., progress=..., **kwargs)``.
        *args: Positional arguments for ``fn``.
        name: A short name for the log.
        **kwargs: Keyword arguments for ``fn``.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "worker", **kwargs: Any) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the Python side owns it until ``finished``
        self.signals = WorkerSignals()
        self.name = name
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        self._cancel = threading.Event()
        self._done = threading.Event()

    def cancel(self) -> None:
        """Ask the function to stop at its next check; its result, if any, is not emitted."""
        self._cancel.set()

    def is_cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancel.is_set()

    def is_done(self) -> bool:
        """True once ``run()`` returned."""
        return self._done.is_set()

    def _progress(self, fraction: float, what: str = "") -> None:
        if not self._cancel.is_set():
            self.signals.progress.emit(float(fraction), str(what))

    def run(self) -> None:  # noqa: D102 - QRunnable API
        try:
            if self._cancel.is_set():  # cancelled while queued: do nothing
                return
            self.signals.started.emit()
            value = self._fn(*self._args, cancel=self.is_cancelled, progress=self._progress, **self._kwargs)
        except Exception as exc:  # the boundary: any failure goes to the UI as a message
            if not self._cancel.is_set():
                logger.debug("%s failed:\n%s", self.name, traceback.format_exc())
                self.signals.error.emit(exc)
            else:
                logger.debug("%s ended after cancel: %s", self.name, exc)
        else:
            if not self._cancel.is_set():
                self.signals.result.emit(value)
        finally:
            self._done.set()
            self.signals.finished.emit()


class WorkerPool(QObject):
    """A private thread pool that keeps its workers alive until they finish.

    Args:
        max_threads: Threads of the pool (1 serialises the work: used for the model, whose
            Grad-CAM hooks must not run twice at once).
        parent: Qt parent.
    """

    def __init__(self, max_threads: int = 1, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max(1, int(max_threads)))
        self._active: dict[WorkerSignals, Worker] = {}
        # Finished workers are dropped one start later, so the Python object outlives the return
        # of its run() in the pool thread.
        self._finished: list[Worker] = []

    def start(self, worker: Worker) -> Worker:
        """Queue a worker; a reference is held until after its ``finished`` signal."""
        self._finished = [w for w in self._finished if not w.is_done()]
        self._active[worker.signals] = worker
        worker.signals.finished.connect(self._on_worker_finished)
        self.pool.start(worker)
        return worker

    def _on_worker_finished(self) -> None:
        sender = self.sender()
        for signals in [s for s, w in self._active.items() if s is sender or w.is_done()]:
            self._finished.append(self._active.pop(signals))

    def cancel_all(self) -> None:
        """Cancel every queued or running worker (cooperatively)."""
        for w in list(self._active.values()):
            w.cancel()

    @property
    def active(self) -> list[Worker]:
        """Workers started and not yet finished."""
        return [w for w in self._active.values() if not w.is_done()]

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the pool is idle (used on close, after :meth:`cancel_all`)."""
        return bool(self.pool.waitForDone(int(timeout_ms)))
