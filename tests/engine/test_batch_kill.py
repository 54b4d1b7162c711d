"""``kill -9`` a real ``mammo-score`` process at random points, many times: the CSV stays valid, no
finished study is lost, no row is duplicated or torn, and resuming to the end gives exactly one
complete row set per study (SPEC section 3; engine/batch.py, crash safety).

The rows are checked with a parser written here, not with ``engine.batch.read_results``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _batch_helpers import REPO, run_score, save_tiny_model, score_command, score_env, write_studies

from engine.inference import Engine
from engine.io.loader import load_study

N_STUDIES = 15
MAX_KILLS = 14
KILL_BUDGET_S = 22.0  # stop killing after this long (a busy machine starts Python slowly)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and /proc are POSIX")


def _children(pid: int) -> set[int]:
    """Child processes of ``pid`` (Linux /proc; empty elsewhere)."""
    out: set[int] = set()
    for f in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out |= {int(x) for x in f.read_text().split()}
        except OSError:
            pass
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _check(path: Path, header: list[str] | None) -> tuple[list[str] | None, dict[str, list[list[str]]], bool]:
    """Validate the file as a kill left it: ``(header, complete studies, torn tail)``."""
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1
    torn = end < len(data)
    lines = data[:end].decode("utf-8").splitlines()
    if not lines:
        return header, {}, torn
    rows = list(csv.reader(lines))
    head = rows[0]
    assert head[:4] == ["study_id", "side", "status", "error"]
    if header is not None:
        assert head == header
    assert data.count(b"study_id,side,") == 1, "header written twice"
    studies: dict[str, list[list[str]]] = {}
    order: list[str] = []
    for row in rows[1:]:
        assert len(row) == len(head), f"short row {row}"
        assert row[0] not in studies or len(studies[row[0]]) < 2, f"row of {row[0]} duplicated"
        if row[0] not in studies:
            assert not order or len(studies[order[-1]]) == 2, "a study's rows are not together"
            order.append(row[0])
            studies[row[0]] = []
        studies[row[0]].append(row)
    for sid in order[:-1]:
        assert [r[1] for r in studies[sid]] == ["R", "L"]
    if order and len(studies[order[-1]]) < 2:  # cut short by the kill: only at the very end
        del studies[order[-1]]
    return head, studies, torn


def test_kill_9_at_random_points_loses_nothing(tmp_path: Path) -> None:
    root = write_studies(tmp_path / "in", N_STUDIES, seed=5)
    model = save_tiny_model(tmp_path / "model")
    out, js = tmp_path / "results.csv", tmp_path / "js"
    args = [root, "-o", out, "--model", model, "--device", "cpu", "--resume", "--json", js, "-q"]
    variants = [["--workers", "2"], ["--workers", "0"], ["--workers", "1", "--loader", "process"], []]
    rng = random.Random(20240607)
    header: list[str] | None = None
    kept: dict[str, list[list[str]]] = {}
    kills = mid_batch = 0
    t_stop = time.monotonic() + KILL_BUDGET_S
    for i in range(MAX_KILLS):
        if time.monotonic() > t_stop:
            break
        size0 = out.stat().st_size if out.exists() else 0
        proc = subprocess.Popen(
            score_command(*args, *variants[i % len(variants)]),
            cwd=REPO, env=score_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if i < 2:  # blind: anywhere from start-up (before the header) on
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # after this run wrote something, within the next few studies
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if out.exists() and out.stat().st_size > size0:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.12))
        children = _children(proc.pid)
        if proc.poll() is not None:
            assert proc.returncode == 0
            break  # the batch ran to its end before the kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        header, studies, _ = _check(out, header)
        for sid, rows in kept.items():  # nothing finished is lost or changed
            assert studies.get(sid) == rows, f"study {sid} lost or rewritten"
        if len(studies) > len(kept) and len(studies) < N_STUDIES:
            mid_batch += 1
        kept = studies
        for sid in studies:  # outputs are on disk before the rows
            assert json.loads((js / f"{sid}.json").read_text())["study_id"] == sid
        deadline = time.monotonic() + 5
        while any(_running(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_running(c) for c in children), "loader processes outlived a killed batch"
    print(f"{kills} kills, {mid_batch} in mid-batch")
    assert kills >= 4 and mid_batch >= 2, (kills, mid_batch)

    done = run_score(*args)
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert data.endswith(b"\n") and data.count(b"study_id,side,") == 1
    header, studies, torn = _check(out, header)
    assert not torn
    ids = [f"P{i:04d}" for i in range(1, N_STUDIES + 1)]
    assert sorted(studies) == ids
    assert len(data.decode().splitlines()) == 1 + 2 * N_STUDIES
    eng = Engine(model, device="cpu")
    col = header.index("p_malignant")
    for sid in ids[::4]:  # the numbers are the engine's, whatever run wrote them
        ref = eng.score(load_study(root / sid), gradcam=False)
        for row in studies[sid]:
            side = ref.sides[row[1]]
            assert row[header.index("status")] == ("ok" if side.available else "missing")
            if side.available:
                assert float(row[col]) == pytest.approx(side.p_malignant, rel=1e-7)
    assert sorted(p.stem for p in js.glob("*.json")) == ids
