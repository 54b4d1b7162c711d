"""``mammo-score`` (engine.cli.score_main): a run, its summary, resume, argument and input errors,
the default model, interruption."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from _batch_helpers import save_tiny_model, write_studies

import engine.batch
from engine.batch import read_results
from engine.cli import default_model, score_main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-vssm")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_studies(tmp_path_factory.mktemp("in") / "in", 3, seed=8)
    (root / "broken").mkdir()
    (root / "broken" / "MG_L_CC.dcm").write_bytes(b"DICM?")
    return root


@pytest.fixture(autouse=True)
def empty_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No bundled model unless a test installs one."""
    folder = tmp_path / "registry"
    folder.mkdir()
    monkeypatch.setenv("MAMMO_MODELS_DIR", str(folder))
    return folder


def _args(studies: Path, out: Path, model_dir: Path, *extra: str) -> list[str]:
    return [str(studies), "-o", str(out), "--model", str(model_dir), "--device", "cpu", *extra]


def test_scores_a_folder_and_says_what_it_did(studies, model_dir, tmp_path, capsys, caplog) -> None:
    out = tmp_path / "r.csv"
    extra = ["--heatmaps", str(tmp_path / "hm"), "--masks", str(tmp_path / "mk"), "--threads", "1"]
    code = score_main(_args(studies, out, model_dir, *extra))
    err = capsys.readouterr().err
    assert code == 0
    assert "scoring: 100%" in err and "4/4" in err  # the progress bar
    last = err.strip().splitlines()[-1]
    assert last.startswith("mammo-score: 3 scored, 1 error in ")
    assert last.endswith(f"with tiny-vssm 0.0.1 on cpu -> {out}")
    assert "tiny-vssm gives no lesion masks (it does not segment)" in caplog.text
    table = read_results(out)
    assert list(table.studies) == ["P0001", "P0002", "P0003", "broken"] and table.studies["broken"] == "error"
    assert len(list((tmp_path / "hm" / "P0002").glob("*_heatmap.png"))) >= 2
    assert not (tmp_path / "mk").exists()


def test_an_existing_file_needs_resume_or_overwrite(studies, model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "r.csv"
    assert score_main(_args(studies, out, model_dir, "-q")) == 0
    data = out.read_bytes()
    capsys.readouterr()
    assert score_main(_args(studies, out, model_dir, "-q")) == 1
    err = capsys.readouterr().err
    assert err == "mammo-score: r.csv: already exists; pass --resume to continue it or --overwrite to replace it\n"
    assert score_main(_args(studies, out, model_dir, "-q", "--resume", "--workers", "2")) == 0
    assert "0 scored, 0 errors, 4 skipped (already in r.csv)" in capsys.readouterr().err
    assert out.read_bytes() == data
    assert score_main(_args(studies, out, model_dir, "-q", "--overwrite", "--workers", "0")) == 0
    assert len(read_results(out).rows) == 8


def test_resume_repairs_and_says_so(studies, model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "r.csv"
    assert score_main(_args(studies, out, model_dir, "-q")) == 0
    before = _no_seconds(read_results(out).rows)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:-1]) + lines[-1][:7])  # as if killed while writing the last row
    capsys.readouterr()
    assert score_main(_args(studies, out, model_dir, "-q", "--resume")) == 0
    err = capsys.readouterr().err
    assert "r.csv: removed incomplete rows of study broken and a torn last line left by an interrupted run" in err
    assert "0 scored, 1 error, 3 skipped" in err
    table = read_results(out)
    assert table.intact and _no_seconds(table.rows) == before


def _no_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize(
    "argv",
    [["--workers", "-1"], ["--retry-errors"], ["--resume", "--overwrite"], ["--threads", "0"], ["--loader", "fork"]],
)
def test_bad_arguments_exit_2(studies, model_dir, tmp_path, argv) -> None:
    with pytest.raises(SystemExit) as exc:
        score_main(_args(studies, tmp_path / "r.csv", model_dir, *argv))
    assert exc.value.code == 2


def test_input_and_model_errors_are_one_line(studies, model_dir, tmp_path, capsys) -> None:
    assert score_main([str(tmp_path / "nope"), "-o", str(tmp_path / "r.csv")]) == 1
    assert capsys.readouterr().err == f"mammo-score: {tmp_path / 'nope'}: no such folder\n"
    assert score_main([str(studies), "-o", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mammo-score: no bundled model installed in ")
    assert err.endswith("; pass --model NAME or a model folder\n")
    assert score_main([str(studies), "-o", str(tmp_path / "r.csv"), "--model", "no-such-model"]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert score_main(_args(studies, tmp_path / "r.csv", model_dir)[:-2] + ["--device", "tpu"]) == 1
    assert "device must be 'auto', 'cpu' or 'cuda'" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_default_model_prefers_hybrid_vssm_shared(empty_registry: Path, model_dir: Path) -> None:
    assert default_model() is None
    for name in ("zeta", "alpha"):
        save_tiny_model(empty_registry / name, name=name)
    assert default_model() == "alpha"
    shutil.copytree(empty_registry / "zeta", empty_registry / "hybrid-vssm-shared")
    card = (empty_registry / "hybrid-vssm-shared" / "model.json")
    card.write_text(card.read_text().replace('"name": "zeta"', '"name": "hybrid-vssm-shared"'))
    assert default_model() == "hybrid-vssm-shared"


def test_uses_the_default_model_when_none_is_named(studies, empty_registry, tmp_path, capsys) -> None:
    save_tiny_model(empty_registry / "only-one", name="only-one")
    assert score_main([str(studies), "-o", str(tmp_path / "r.csv"), "--device", "cpu", "-q"]) == 0
    assert {r["model"] for r in read_results(tmp_path / "r.csv").rows} == {"only-one"}


def test_interrupt_exits_130_and_points_at_resume(studies, model_dir, tmp_path, capsys, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.batch, "run_batch", interrupted)
    assert score_main(_args(studies, tmp_path / "r.csv", model_dir, "-q")) == 130
    err = capsys.readouterr().err
    assert err == f"mammo-score: interrupted; {tmp_path / 'r.csv'} is valid: rerun with --resume to continue\n"


def test_verbose_logs_the_engine(studies, model_dir, tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        assert score_main(_args(studies, tmp_path / "r.csv", model_dir, "-q", "-v")) == 0
    assert "engine ready: tiny-vssm 0.0.1 on cpu" in caplog.text
