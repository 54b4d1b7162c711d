"""AiProcess: the engine runs in a child process, driven from a worker thread of the viewer.

Why a process. The viewer's event loop must never block for more than 100 ms, but torch holds
Python's GIL while its extension initialises (``import torch`` blocks every other thread of the
process for about 0.3 s on a 2-core machine) and while a model's Python code runs between tensor
operations. In a child process none of that touches the viewer's interpreter. The child also
isolates the viewer from a crash in native model code, and closing the window can end it at once.

The child is ``python -m viewer.ai_process FD`` (a fresh interpreter, so nothing of the viewer's
``__main__`` is re-imported), talking over a socket pair wrapped in a
``multiprocessing.connection.Connection`` (pickled messages; on Windows, where descriptors cannot
be passed, a ``spawn``-context ``multiprocessing.Process`` and ``Pipe`` carry the same protocol).
One request at a time:

- the viewer's worker thread sends ``("score", request_id, study_path, model, device, target,
  flips)`` and waits, relaying ``("progress", id, fraction, stage)`` messages, for
  ``("result", id, AiOutcome)`` or ``("error", id, exception)``;
- ``("cancel", id)`` cancels every request up to ``id``: the child's ``cancel()`` callable (the
  engine polls it between stages) reads pending messages and returns True once the running
  request is cancelled;
- ``("quit",)`` ends the child; :meth:`AiProcess.close` terminates it if it does not end in time.

The child loads the study itself from its path (the same files, the same deterministic loader)
rather than receiving 150 MB of pixels through the pipe, keeps the last study and the engines it
built, and sends back the result without its full-resolution heatmap cache plus the heatmaps
already reduced for display (``viewer.overlays.heatmap_display_map``), so the viewer never holds
a 54 MB float map per view. This module imports no Qt.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["AiOutcome", "AiProcess"]

logger = logging.getLogger(__name__)

#: Seconds to wait for the child to quit before it is terminated.
_QUIT_TIMEOUT_S = 1.0


@dataclass
class AiOutcome:
    """What a scoring request gives back to the viewer.

    Attributes:
        result: The ``engine.Result`` (heatmaps rebuildable from its ``cams`` and geometries).
        heatmap_maps: ``{view: float32 map}`` reduced and mirrored for display.
        info: ``Engine.info()`` (model, version, device, classes...).
        targets: Grad-CAM targets the model offers (text form), each view explained by its own
            breast (``"malignancy"``, ``"birads:4"``, ...).
        seconds: Wall time of the request in the child (study load included).
    """

    result: Any
    heatmap_maps: dict[str, Any] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(conn) -> None:  # pragma: no cover - runs in the child process
    """The child's loop: score requests until ``quit`` or the pipe closes."""
    import collections
    import math

    import engine
    from viewer.overlays import heatmap_display_map

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [ai] %(name)s: %(message)s")
    _ = engine.Engine  # torch and the models load now, before the first request arrives

    engines: dict[tuple[str, str], Any] = {}
    study_cache: tuple[str, float, Any] | None = None
    pending: collections.deque = collections.deque()
    cancelled_upto = [0.0]

    def take(msg) -> None:
        if msg and msg[0] == "cancel":
            cancelled_upto[0] = max(cancelled_upto[0], float(msg[1]))
        elif msg and msg[0] == "quit":
            cancelled_upto[0] = math.inf
            pending.append(msg)
        else:
            pending.append(msg)

    def drain() -> None:
        try:
            while conn.poll(0):
                take(conn.recv())
        except (EOFError, OSError):
            cancelled_upto[0] = math.inf
            pending.append(("quit",))

    while True:
        if not pending:
            try:
                take(conn.recv())
            except (EOFError, OSError):
                return
            continue
        msg = pending.popleft()
        if msg[0] == "quit":
            return
        if msg[0] != "score":
            continue
        _, rid, path, model, device, target, flips = msg
        t0 = time.perf_counter()

        def cancel(rid=rid) -> bool:
            drain()
            return cancelled_upto[0] >= rid

        def progress(fraction: float, stage: str, rid=rid) -> None:
            try:
                conn.send(("progress", rid, float(fraction), str(stage)))
            except (OSError, ValueError):
                pass

        try:
            if cancel():
                raise engine.Cancelled(path, "scoring cancelled")
            mtime = Path(path).stat().st_mtime
            if study_cache is None or study_cache[:2] != (path, mtime):
                progress(-1.0, "reading the study")
                study_cache = (path, mtime, engine.load_study(path))
            study = study_cache[2]
            if cancel():
                raise engine.Cancelled(path, "scoring cancelled")
            key = (model, device)
            if key not in engines:
                progress(-1.0, "loading the model")
                engines[key] = engine.Engine(model=model, device=device)
            eng = engines[key]
            targets = [str(t) for t in eng.targets() if t.side is None]
            result = eng.score(
                study,
                gradcam=True,
                target=target if target in targets else None,
                cancel=cancel,
                progress=progress,
            )
            maps = {}
            for view in result.heatmaps:
                if cancel():
                    raise engine.Cancelled(path, "scoring cancelled")
                maps[view] = heatmap_display_map(result.heatmaps[view], bool(flips.get(view, False)))
            light = dataclasses.replace(result)  # same numbers, without the full-size heatmap cache
            out = AiOutcome(light, maps, eng.info(), targets, time.perf_counter() - t0)
            conn.send(("result", rid, out))
        except Exception as exc:
            try:
                conn.send(("error", rid, _picklable(exc)))
            except (OSError, ValueError):
                return


def _child_main(fd: int) -> None:  # pragma: no cover - runs in the child process
    from multiprocessing.connection import Connection

    _serve(Connection(fd))


class _Child:
    """A started child: its connection and how to wait for / stop it."""

    def __init__(self) -> None:
        if os.name == "nt":  # no descriptor passing: a spawn-context process (needs a main guard)
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(child,), name="mammo-ai", daemon=True)
            self._proc.start()
            child.close()
            self.conn = parent
            self.pid = self._proc.pid
            self._popen = None
            return
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._popen = subprocess.Popen(
            [sys.executable, "-m", "viewer.ai_process", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.pid = self._popen.pid
        self._proc = None

    def is_alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return self._proc.is_alive()

    def join(self, timeout_s: float) -> None:
        if self._popen is not None:
            try:
                self._popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        else:
            self._proc.join(timeout_s)

    def terminate(self) -> None:
        (self._popen or self._proc).terminate()

    def kill(self) -> None:
        (self._popen or self._proc).kill()


class AiProcess:
    """A child process that owns the engines; :meth:`score` is called from a worker thread.

    The process starts on the first request (torch and the model load there, not in the viewer).
    """

    def __init__(self) -> None:
        self._child: _Child | None = None
        self._lock = threading.Lock()  # one request at a time
        self._send_lock = threading.Lock()  # the GUI thread may send a cancel during a request
        self._next_id = 0
        self._closed = False

    @property
    def alive(self) -> bool:
        """True while the child runs."""
        return self._child is not None and self._child.is_alive()

    def _send(self, msg: tuple) -> None:
        child = self._child
        if child is None:
            return
        with self._send_lock:
            try:
                child.conn.send(msg)
            except (OSError, ValueError):
                pass

    def _ensure(self) -> _Child:
        if self._closed:
            raise RuntimeError("the AI process was closed")
        if not self.alive:
            self._child = _Child()
            logger.info("AI process started (pid %s)", self._child.pid)
        return self._child

    def cancel_all(self) -> None:
        """Cancel the running request and any sent before (non-blocking)."""
        if self._next_id:
            self._send(("cancel", self._next_id))

    def score(
        self,
        study_path: str | Path,
        model: str,
        device: str,
        target: str,
        flips: dict[str, bool],
        *,
        cancel: Callable[[], bool],
        progress: Callable[[float, str], None],
    ) -> AiOutcome:
        """Score a study in the child; blocks the calling (worker) thread, never the GUI.

        Raises:
            engine.Cancelled: ``cancel()`` turned True, or a newer request superseded this one.
            engine.MammoError: What the engine raised (unknown model, empty study, ...).
            engine.ModelError: The child process died.
        """
        import engine

        with self._lock:
            if cancel():
                raise engine.Cancelled(study_path, "scoring cancelled")
            child = self._ensure()
            self._next_id += 1
            rid = self._next_id
            self._send(("score", rid, str(study_path), model, device, target, dict(flips)))
            cancelled = False
            while True:
                if not cancelled and cancel():
                    cancelled = True
                    self._send(("cancel", rid))
                try:
                    ready = child.conn.poll(0.05)
                except (EOFError, OSError):
                    ready = True
                if not ready:
                    if not child.is_alive():
                        if cancelled or self._closed:
                            raise engine.Cancelled(study_path, "scoring cancelled")
                        raise engine.ModelError("the AI process stopped unexpectedly")
                    continue
                try:
                    msg = child.conn.recv()
                except (EOFError, OSError) as exc:
                    if cancelled or self._closed:
                        raise engine.Cancelled(study_path, "scoring cancelled") from exc
                    raise engine.ModelError("the AI process stopped unexpectedly") from exc
                kind, mid = msg[0], msg[1]
                if mid != rid:
                    continue  # a late message of an older request
                if kind == "progress":
                    if not cancelled:
                        progress(msg[2], msg[3])
                elif kind == "result":
                    if cancelled:
                        raise engine.Cancelled(study_path, "scoring cancelled")
                    return msg[2]
                elif kind == "error":
                    raise msg[2]

    def close(self, timeout_s: float = _QUIT_TIMEOUT_S) -> None:
        """Cancel, ask the child to quit, and terminate it if it does not within ``timeout_s``."""
        self._closed = True
        child = self._child
        if child is None:
            return
        self.cancel_all()
        self._send(("quit",))
        child.join(timeout_s)
        if child.is_alive():
            logger.info("AI process did not quit in %.1f s; terminating it", timeout_s)
            child.terminate()
            child.join(2.0)
            if child.is_alive():
                child.kill()
                child.join(1.0)
        try:
            child.conn.close()
        except OSError:
            pass


if __name__ == "__main__":  # pragma: no cover - the child process
    # run from the importable module, so pickled classes are ``viewer.ai_process.*``, not ``__main__.*``
    from viewer import ai_process

    ai_process._child_main(int(sys.argv[1]))
