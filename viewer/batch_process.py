"""BatchProcess: Tools > Batch score folder runs ``engine.batch.run_batch`` in a child process.

Why a process (as for the single-study AI, ``viewer.ai_process``): torch and the model's Python
code hold the GIL for long stretches, which would stall the viewer's event loop; in a child they
cannot, a crash in native code cannot take the viewer down, and a cancel that the engine does not
honour in time can end the child at once without risk to the results file, whose rows are
appended with one write and an fsync per study (``engine.batch``: a ``kill -9`` at any moment
leaves a valid file that ``resume`` continues).

The child is ``python -m viewer.batch_process FD`` (a fresh interpreter), talking over a socket
pair wrapped in a ``multiprocessing.connection.Connection``; one batch per child:

- the viewer's worker thread sends ``("run", request)`` (a :class:`BatchRequest` as a dict);
- the child answers ``("status", text)`` while it starts, ``("engine", {model, model_version,
  device})`` once the model is loaded, ``("progress", dict)`` for every
  ``engine.batch.BatchProgress`` (once before the first study, then after each), and finally
  ``("done", summary dict)`` or ``("error", exception)``, then exits;
- ``("cancel",)`` from the viewer turns the child's ``cancel()`` callable True; ``run_batch``
  polls it before each study and between the stages of scoring, stops, closes the file and the
  child sends ``done`` with ``cancelled`` set.

Cancel is answered within :data:`CANCEL_GRACE_S`: when the child has not finished by then (it may
be inside a long forward pass, loading the model, or stuck reading a file) it is killed, and the
results file's tail is repaired here as a ``--resume`` would (:func:`repair_results`), so the
file left behind is always complete rows only. This module imports no Qt.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["CANCEL_GRACE_S", "BatchRequest", "BatchOutcome", "BatchProcess", "repair_results"]

logger = logging.getLogger(__name__)

#: Seconds a cancelled child may take to stop by itself before it is killed.
CANCEL_GRACE_S = 0.6
#: The module the child runs (``python -m``); its ``__main__`` serves one batch.
_CHILD_MODULE = "viewer.batch_process"
_POLL_S = 0.05


@dataclass(frozen=True)
class BatchRequest:
    """What to score (``mammo-score``'s options).

    Attributes:
        input_dir: Folder of studies.
        output_csv: Results file.
        model: Bundled model name (or a model folder).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        resume: Continue an existing results file.
        overwrite: Replace an existing results file.
        retry_errors: With ``resume``, score the studies with error rows again.
        workers: Studies loaded ahead of the model.
    """

    input_dir: str
    output_csv: str
    model: str
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    retry_errors: bool = False
    workers: int = 1


@dataclass
class BatchOutcome:
    """How a batch ended.

    Attributes:
        csv: The results file.
        found: Studies found under the input folder.
        skipped: Already in the file (resume).
        scored: Scored in this run.
        errors: Studies that got error rows in this run.
        cancelled: Stopped by the user.
        killed: The child did not stop within :data:`CANCEL_GRACE_S` and was ended.
        seconds: Wall time of the batch (the child's, without its start-up).
        repaired: What was cut off the file's tail (by the child on resume, or here after a kill).
        warnings: Per-study remarks that did not make a study an error.
        error_ids: Studies with error rows in this run.
        model: Model name, version and device actually used (``"name version on device"``).
    """

    csv: str
    found: int = 0
    skipped: int = 0
    scored: int = 0
    errors: int = 0
    cancelled: bool = False
    killed: bool = False
    seconds: float = 0.0
    repaired: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error_ids: list[str] = field(default_factory=list)
    model: str = ""

    @property
    def done(self) -> int:
        """Studies finished in this run."""
        return self.scored + self.errors


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(conn) -> None:  # pragma: no cover - runs in the child process
    """The child: run one batch, relaying progress, then exit."""
    import warnings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s [batch] %(name)s: %(message)s")
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    cancelled = [False]

    def send(msg: tuple) -> None:
        try:
            conn.send(msg)
        except (OSError, ValueError):
            cancelled[0] = True  # the viewer is gone: stop at the next check

    def cancel() -> bool:
        try:
            while conn.poll(0):
                msg = conn.recv()
                if msg and msg[0] == "cancel":
                    cancelled[0] = True
        except (EOFError, OSError):
            cancelled[0] = True
        return cancelled[0]

    try:
        msg = conn.recv()
    except (EOFError, OSError):
        return
    if not msg or msg[0] != "run":
        return
    req = BatchRequest(**msg[1])
    try:
        send(("status", "loading the model"))
        import engine

        eng = engine.Engine(req.model, device=req.device)
        send(("engine", {"model": eng.name, "model_version": eng.version, "device": eng.device_name}))
        if cancel():
            send(("done", {"csv": req.output_csv, "cancelled": True}))
            return
        summary = engine.run_batch(
            req.input_dir,
            req.output_csv,
            eng,
            resume=req.resume,
            overwrite=req.overwrite,
            retry_errors=req.retry_errors,
            workers=req.workers,
            cancel=cancel,
            progress=lambda p: send(("progress", dataclasses.asdict(p))),
        )
        out = {
            "csv": str(summary.csv),
            "found": summary.found,
            "skipped": summary.skipped,
            "scored": summary.scored,
            "errors": summary.errors,
            "cancelled": summary.cancelled,
            "seconds": summary.seconds,
            "repaired": list(summary.repaired),
            "warnings": list(summary.warnings),
            "error_ids": list(summary.error_ids),
            "model": f"{eng.name} {eng.version} on {eng.device_name}",
        }
        send(("done", out))
    except Exception as exc:
        logger.debug("batch failed", exc_info=True)
        send(("error", _picklable(exc)))


def _child_main(fd: int) -> None:  # pragma: no cover - runs in the child process
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        _serve(conn)
    finally:
        conn.close()


class _Child:
    """A started child process and its connection."""

    def __init__(self) -> None:
        if os.name == "nt":  # no descriptor passing: a spawn-context process
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            self._proc: Any = ctx.Process(target=_serve, args=(child,), name="mammo-batch", daemon=True)
            self._proc.start()
            child.close()
            self.conn = parent
            self.pid = self._proc.pid
            self._popen: subprocess.Popen | None = None
            return
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._popen = subprocess.Popen(
            [sys.executable, "-m", _CHILD_MODULE, str(theirs.fileno())],
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
        return bool(self._proc.is_alive())

    @property
    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen is not None else self._proc.exitcode

    def join(self, timeout_s: float) -> None:
        if self._popen is not None:
            try:
                self._popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        else:
            self._proc.join(timeout_s)

    def kill(self) -> None:
        (self._popen or self._proc).kill()

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


def repair_results(path: str | Path) -> list[str]:
    """Cut a killed batch's incomplete tail off a results file, as ``--resume`` would.

    ``engine.read_results`` finds where the complete studies end; the file is truncated there
    under the same ``flock`` a batch holds while it writes (a file another batch holds is left
    alone).

    Returns:
        What was removed (empty when the file was intact, absent, held by another batch, or has no
        complete header yet: the next resume writes the header again).
    """
    import engine

    p = Path(path)
    if not p.is_file():
        return []
    try:
        fd = os.open(p, os.O_RDWR | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        logger.warning("%s: could not check the results file after stopping the batch: %s", p.name, exc)
        return []
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            pass
        except OSError:
            logger.info("%s: another batch is writing to it; not repaired here", p.name)
            return []
        table = engine.read_results(p)
        if table.intact or not table.columns:
            return []
        repaired = []
        if table.incomplete_study is not None:
            repaired.append(f"incomplete rows of study {table.incomplete_study}")
        if table.torn_line:
            repaired.append("a torn last line")
        os.ftruncate(fd, table.complete_bytes)
        os.fsync(fd)
        logger.info("%s: removed %s left by the stopped batch", p.name, " and ".join(repaired))
        return repaired
    except (engine.MammoError, OSError) as exc:
        logger.warning("%s: could not check the results file after stopping the batch: %s", p.name, exc)
        return []
    finally:
        os.close(fd)


def _reap_in_background(child: _Child, timeout_s: float) -> None:
    """Wait for an exiting child in a daemon thread; kill it if it has not exited in time."""

    def reap() -> None:
        child.join(timeout_s)
        if child.is_alive():
            logger.info("batch process still running %.0f s after its answer; ending it", timeout_s)
            child.kill()
            child.join(2.0)

    threading.Thread(target=reap, name="mammo-batch-reaper", daemon=True).start()


class BatchProcess:
    """Runs one batch at a time in a child process; :meth:`run` is called from a worker thread."""

    def __init__(self, grace_s: float = CANCEL_GRACE_S) -> None:
        self.grace_s = float(grace_s)
        self._child: _Child | None = None

    @property
    def alive(self) -> bool:
        """True while a child runs."""
        return self._child is not None and self._child.is_alive()

    def run(
        self,
        request: BatchRequest,
        *,
        cancel: Callable[[], bool],
        progress: Callable[[float, str], None],
        report: Callable[[str, Any], None] | None = None,
    ) -> BatchOutcome:
        """Run a batch to its end (or until ``cancel()``); blocks the calling worker thread.

        Args:
            request: What to score.
            cancel: Polled every 50 ms; once True the child is asked to stop, and killed after
                :attr:`grace_s` seconds if it has not.
            progress: ``(fraction, text)``, fraction -1 while starting.
            report: ``(kind, payload)`` for the rich updates: ``("status", text)``,
                ``("engine", dict)``, ``("progress", dict of engine.batch.BatchProgress)``.

        Returns:
            The :class:`BatchOutcome` (``cancelled`` when stopped).

        Raises:
            engine.MammoError: What the engine raised before the batch could start (unknown
                model, a results file that cannot be continued, ...).
            engine.ModelError: The child process died.
            OSError: The results file cannot be written.
        """
        import engine

        report = report or (lambda kind, payload: None)
        if cancel():
            return BatchOutcome(request.output_csv, cancelled=True)
        progress(-1.0, "starting")
        child = _Child()
        self._child = child
        logger.info("batch process started (pid %s)", child.pid)
        cancel_at: float | None = None
        last: dict = {}
        try:
            child.conn.send(("run", dataclasses.asdict(request)))
            while True:
                if cancel_at is None and cancel():
                    cancel_at = time.monotonic()
                    try:
                        child.conn.send(("cancel",))
                    except (OSError, ValueError):
                        pass
                if cancel_at is not None and time.monotonic() - cancel_at > self.grace_s:
                    return self._kill(child, request, last)
                try:
                    ready = child.conn.poll(_POLL_S)
                except (EOFError, OSError):
                    ready = True
                if not ready:
                    if not child.is_alive():
                        if cancel_at is not None:
                            return self._kill(child, request, last)
                        raise engine.ModelError(f"the batch process stopped unexpectedly (exit code {child.exit_code})")
                    continue
                try:
                    msg = child.conn.recv()
                except (EOFError, OSError) as exc:
                    if cancel_at is not None:
                        return self._kill(child, request, last)
                    child.join(1.0)
                    raise engine.ModelError(
                        f"the batch process stopped unexpectedly (exit code {child.exit_code})"
                    ) from exc
                kind = msg[0]
                if kind == "progress":
                    d = last = msg[1]
                    if d.get("total"):
                        progress(d["done"] / d["total"], f"{d['done']} of {d['total']}")
                    report("progress", d)
                elif kind in ("status", "engine"):
                    report(kind, msg[1])
                elif kind == "done":
                    known = {f.name for f in dataclasses.fields(BatchOutcome)}
                    return BatchOutcome(**{k: v for k, v in msg[1].items() if k in known})
                elif kind == "error":
                    raise msg[1]
        finally:
            child.close()
            if child.is_alive():
                # it answered and closed the results file: let it exit (torch's teardown takes a
                # while) without holding up the outcome; ended if it has not within 5 s
                _reap_in_background(child, 5.0)
            self._child = None

    def _kill(self, child: _Child, request: BatchRequest, last: dict) -> BatchOutcome:
        """End a child that did not stop in time, and repair the file's tail.

        The counts come from the last progress report (every study it counts is on disk).
        """
        if child.is_alive():
            logger.info("batch process did not stop within %.1f s; ending it", self.grace_s)
            child.kill()
        child.join(5.0)
        repaired = repair_results(request.output_csv)
        done, errors, skipped = int(last.get("done", 0)), int(last.get("errors", 0)), int(last.get("skipped", 0))
        return BatchOutcome(
            request.output_csv,
            found=int(last.get("total", 0)) + skipped,
            skipped=skipped,
            scored=done - errors,
            errors=errors,
            cancelled=True,
            killed=True,
            seconds=float(last.get("elapsed", 0.0)),
            repaired=repaired,
        )


if __name__ == "__main__":  # pragma: no cover - the child process
    # run from the importable module, so pickled classes are ``viewer.batch_process.*``
    from viewer import batch_process

    batch_process._child_main(int(sys.argv[1]))
