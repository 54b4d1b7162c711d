"""File > Export DICOM: ``engine.dicom_export.export_study`` in a child process (no Qt here).

Why a process: the first export imports highdicom and pydicom's SR modules, and the import held
the GIL long enough to stall the viewer's event loop for 0.4-0.5 s on the demo study when the export
ran in a worker thread (a second export, with the modules loaded, did not stall). In a child
nothing of that touches the viewer's interpreter: the event loop's longest gap during an export
was 36-45 ms (``bench/bench_viewer_batch.py``; figures in ``bench/RESULTS.md``).

The child (``python -m viewer.dicom_export_job FD``, as for ``viewer.ai_process``) loads the
study again from its folder (the same deterministic loader the AI child uses; the export re-reads
the source files' headers anyway and needs none of the viewer's decoded pixels) and receives the
result (model-space Grad-CAM maps, geometries, contours: small). A cancel, or a child that dies,
ends it; the engine writes each file under a hidden temporary name and renames it, so a stopped
export leaves whole files (and at most one hidden temporary file).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

__all__ = ["export_dicom_job"]

logger = logging.getLogger(__name__)

_POLL_S = 0.05


def _child(conn) -> None:  # pragma: no cover - child process
    """The child: receive one request, export, answer, exit."""
    import pickle
    import warnings

    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    try:
        study_path, result, out_dir = conn.recv()
    except (EOFError, OSError):
        return
    try:
        import engine

        study = engine.load_study(study_path)
        if out_dir is None:
            with tempfile.TemporaryDirectory(prefix="mammo-dicom-") as tmp:
                engine.export_study(study, result, Path(tmp) / "export")
            written: list[str] = []
        else:
            written = [str(p) for p in engine.export_study(study, result, out_dir)]
        conn.send(("done", written))
    except Exception as exc:
        try:
            pickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        conn.send(("error", exc))


def _start_child():
    """``python -m viewer.dicom_export_job FD`` (a fresh interpreter that re-imports nothing of the
    viewer's ``__main__``), or a spawn-context process where descriptors cannot be passed."""
    if os.name == "nt":
        ctx = mp.get_context("spawn")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(theirs,), name="mammo-dicom-export", daemon=True)
        proc.start()
        theirs.close()
        return ours, proc
    from multiprocessing.connection import Connection

    a, b = socket.socketpair()
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "viewer.dicom_export_job", str(b.fileno())],
        pass_fds=(b.fileno(),),
        env=env,
        stdin=subprocess.DEVNULL,
    )
    b.close()
    return Connection(a.detach()), proc


def _alive(proc) -> bool:
    return proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_alive()


def _exit_code(proc) -> int | None:
    return proc.poll() if isinstance(proc, subprocess.Popen) else proc.exitcode


def _end(proc, timeout_s: float = 5.0) -> None:
    """Reap the child in a daemon thread (its interpreter's exit need not hold up the answer);
    kill it if it has not exited within ``timeout_s``."""

    def reap() -> None:
        if isinstance(proc, subprocess.Popen):
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2.0)
        else:
            proc.join(timeout_s)
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)

    threading.Thread(target=reap, name="mammo-dicom-reaper", daemon=True).start()


def export_dicom_job(
    study_path: str | Path,
    result: Any,
    out_dir: str | Path | None,
    *,
    cancel: Callable[[], bool],
    progress: Callable[[float, str], None],
) -> list[Path]:
    """Worker function: export a scored study to DICOM in a child process; blocks the worker thread.

    Args:
        study_path: The study folder (loaded again in the child).
        result: Its ``engine.Result``.
        out_dir: Output folder; None only asks whether the engine can export this study (into a
            temporary folder that is removed): how a raster study gets the engine's reason.
        cancel: Polled every 50 ms; True ends the child.
        progress: Told when the child starts.

    Returns:
        The files written (empty for ``out_dir=None``).

    Raises:
        engine.MammoError: What the engine raised (a raster study, highdicom missing, ...).
        engine.Cancelled: ``cancel()`` turned True.
        engine.ModelError: The child died.
    """
    import engine

    light = dataclasses.replace(result)  # without a full-size heatmap cache, if one was built
    progress(-1.0, "exporting")
    conn, proc = _start_child()
    try:
        conn.send((str(study_path), light, None if out_dir is None else str(out_dir)))
        while True:
            if cancel():
                if _alive(proc):
                    proc.kill()
                raise engine.Cancelled(study_path, "DICOM export cancelled")
            try:
                ready = conn.poll(_POLL_S)
            except (EOFError, OSError):
                ready = True
            if not ready:
                if not _alive(proc):
                    raise engine.ModelError(
                        f"the DICOM export process stopped unexpectedly (exit code {_exit_code(proc)})"
                    )
                continue
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError) as exc:
                raise engine.ModelError("the DICOM export process stopped unexpectedly") from exc
            if kind == "error":
                raise payload
            return [Path(p) for p in payload]
    finally:
        try:
            conn.close()
        except OSError:
            pass
        _end(proc)


if __name__ == "__main__":  # pragma: no cover - the child process
    from multiprocessing.connection import Connection

    from viewer import dicom_export_job

    dicom_export_job._child(Connection(int(sys.argv[1])))
