"""`mammo-train` end to end on a tiny config: run folder, determinism, resume, export, reproduce."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file
from train_fixtures import phantom_cache, tiny_config, write_tiny_toml

import engine
from engine.weights import list_models, load_model, read_card, sha256_file
from training.cli import main
from training.config import ConfigError
from training.export import export_run, reproduce
from training.loop import read_metrics, tensors_sha256, train

_VOLATILE = {"seconds", "time", "train_seconds", "train_studies_per_second"}


def _stable(records):
    return [{k: v for k, v in r.items() if k not in _VOLATILE} for r in records]


def _digest(path):
    return tensors_sha256(load_file(str(path)))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """Three epochs, uninterrupted, DataLoader in the main process."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    result = train(tiny_config(tmp_path_factory, "train.epochs=3"), out, progress=False)
    return out, result


def test_cli_trains_end_to_end(tmp_path_factory, tmp_path, capsys):
    toml = write_tiny_toml(tmp_path_factory, tmp_path / "tiny.toml")
    run = tmp_path / "run"
    # no --data: the phantom comes from the config's options (found in the generation cache)
    assert main([str(toml), "--out", str(run), "--no-progress", "-q"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("mammo-train: 2 epochs") and str(run) in line
    for name in ("config.json", "config.toml", "metrics.jsonl", "last.safetensors", "last_state.pt",
                 "best.safetensors", "test_metrics.json", "run.json", "train.log"):  # fmt: skip
        assert (run / name).is_file(), name
    records = read_metrics(run)
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) and r["lr"] == 1e-4
        assert set(r["val"]) == {"malignancy_auc", "malignancy_f1_macro", "birads_auc", "birads_f1_macro"}
        assert set(r["train_task_loss"]) == {"malignancy", "birads"}
    best = [r for r in records if r["best"]]
    run_info = json.loads((run / "run.json").read_text())
    assert best and best[-1]["epoch"] == run_info["best_epoch"] == records[-1]["best_epoch"]
    assert run_info["command"].startswith("mammo-train ") and "--out" in run_info["command"]
    assert run_info["data"]["splits"] == {"train": 8, "val": 4, "test": 4}
    assert run_info["data"]["generation"]["studies"] == 16
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["split"] == "test" and test["n_studies"] == 4 and test["best_epoch"] == run_info["best_epoch"]
    assert set(test["table"]) == {"malignancy_auc", "malignancy_f1_macro", "birads_auc", "birads_f1_macro"}
    assert 0.0 <= test["table"]["birads_f1_macro"] <= 1.0
    assert len(test["per_study"]["p_malignancy"]) == 4
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2
    assert "heads.malignancy_R.weight" in load_file(str(run / "best.safetensors"))

    # export through the CLI; a second export needs --force
    models = tmp_path / "models"
    assert main(["export", str(run), "--name", "tiny-cli", "--models-dir", str(models)]) == 0
    assert (models / "tiny-cli" / "model.safetensors").is_file()
    assert main(["export", str(run), "--name", "tiny-cli", "--models-dir", str(models)]) == 2
    assert main(["export", str(run), "--name", "tiny-cli", "--models-dir", str(models), "--force"]) == 0
    # errors are one line and exit status 2
    assert main([str(toml), "--out", str(tmp_path / "bad"), "--set", "train.epochs=0", "-q"]) == 2
    assert "epochs" in capsys.readouterr().err


def test_two_runs_give_identical_weights(reference_run, tmp_path_factory, tmp_path):
    ref_dir, _ = reference_run
    # same config, but DataLoader worker processes: the augmentation does not depend on them
    out = tmp_path / "again"
    train(tiny_config(tmp_path_factory, "train.epochs=3", "train.num_workers=2"), out, progress=False)
    assert _digest(out / "last.safetensors") == _digest(ref_dir / "last.safetensors")
    assert _digest(out / "best.safetensors") == _digest(ref_dir / "best.safetensors")
    assert _stable(read_metrics(out)) == _stable(read_metrics(ref_dir))
    # a different seed gives different weights (the comparison can fail)
    other = tmp_path / "seed1"
    train(tiny_config(tmp_path_factory, "train.epochs=1", "train.seed=1"), other, progress=False)
    first = tmp_path / "seed0"
    train(tiny_config(tmp_path_factory, "train.epochs=1"), first, progress=False)
    assert _digest(other / "last.safetensors") != _digest(first / "last.safetensors")


class _Crash(RuntimeError):
    pass


def test_interrupted_then_resumed_equals_uninterrupted(reference_run, tmp_path_factory, tmp_path):
    ref_dir, ref = reference_run
    out = tmp_path / "resumed"

    def crash_after_2(epoch, record):
        if epoch == 2:
            raise _Crash("power cut")

    config = tiny_config(tmp_path_factory, "train.epochs=3")
    with pytest.raises(_Crash):
        train(config, out, progress=False, on_epoch_end=crash_after_2)
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2]
    assert not (out / "test_metrics.json").exists()
    # a metrics line written for an epoch whose checkpoint never landed is dropped on resume
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 3, "train_loss": 123.0}) + "\n")
    # another config cannot continue this run
    with pytest.raises(ConfigError, match="another config"):
        train(tiny_config(tmp_path_factory, "train.epochs=3", "optim.lr=0.001"), out, progress=False)
    result = train(config, out, progress=False)
    assert result.resumed_from == 2 and result.epochs_run == 3
    assert _digest(out / "last.safetensors") == _digest(ref_dir / "last.safetensors")
    assert _digest(out / "best.safetensors") == _digest(ref_dir / "best.safetensors")
    assert _stable(read_metrics(out)) == _stable(read_metrics(ref_dir))
    assert result.best_epoch == ref.best_epoch and result.test["table"] == ref.test["table"]
    # --restart semantics: resume=False starts over (and gets the same numbers again)
    again = train(config.replace(train=config.train.__class__(**{**config.train.__dict__, "epochs": 1})), out,
                  progress=False, resume=False)  # fmt: skip
    assert again.resumed_from == 0 and [r["epoch"] for r in read_metrics(out)] == [1]


def test_export_card_loads_and_scores_like_training(reference_run, tmp_path):
    ref_dir, ref = reference_run
    models = tmp_path / "models"
    card = export_run(ref_dir, "tiny-hybrid", models_dir=models, export_command="mammo-train export ...")
    assert [c.name for c in list_models(models)] == ["tiny-hybrid"]
    card = read_card(models / "tiny-hybrid")
    assert card.sha256 == sha256_file(models / "tiny-hybrid" / "model.safetensors")
    t = card.training
    assert t["config"]["model"]["in_size"] == 64 and t["command"] and t["torch_version"]
    assert t["data"]["dataset"] == "phantom" and t["data"]["licence"] and t["data"]["citation"]
    assert len(t["data"]["fingerprint"]) == 64 and t["seconds"] > 0 and t["where"]["cpu_count"] >= 1
    assert t["best_epoch"] == ref.best_epoch and t["export_command"] == "mammo-train export ..."
    assert card.metrics["table"] == pytest.approx(ref.test["table"])
    assert card.classes == {"malignancy": ["normal_or_benign", "malignant"], "birads": [1, 2, 3, 4, 5]}
    assert card.input["size"] == [64, 64] and card.input["preprocessing"]["name"] == "breast-crop-v1"
    assert card.description == "tiny test model"
    model, _ = load_model("tiny-hybrid", models)
    best = load_file(str(ref_dir / "best.safetensors"))
    assert all(model.state_dict()[k].equal(v) for k, v in best.items())

    # engine.Engine scores a test study from its files like the training evaluation did
    per = ref.test["per_study"]
    study_id = per["study_ids"][0]
    root = json.loads((ref_dir / "run.json").read_text())["data"]["root"]
    eng = engine.Engine(model="tiny-hybrid", device="cpu", models_dir=models)
    result = eng.score(engine.load_study(f"{root}/{study_id}"), gradcam=False)
    for j, side in enumerate("RL"):
        if per["y_malignancy"][0][j] < 0 and not result.sides[side].available:
            continue
        assert result.sides[side].p_malignant == pytest.approx(per["p_malignancy"][0][j][1], abs=2e-3)
        probs = [result.sides[side].p_birads[c] for c in (1, 2, 3, 4, 5)]
        np.testing.assert_allclose(probs, per["p_birads"][0][j], atol=2e-3)


def test_reproduce_reports_identical_weights(reference_run, tmp_path):
    ref_dir, ref = reference_run
    models = tmp_path / "models"
    export_run(ref_dir, "tiny-hybrid", models_dir=models)
    report = reproduce("tiny-hybrid", models_dir=models, progress=False)
    assert report["identical"] and report["data_same"] and report["max_abs_weight_diff"] == 0.0
    assert report["run_table"] == pytest.approx(report["card_table"])
    assert "bit-identical" in report["text"] and "malignancy_auc" in report["text"]
    changed = reproduce("tiny-hybrid", models_dir=models, progress=False, overrides=["train.seed=1"])
    assert not changed["identical"] and changed["max_abs_weight_diff"] > 0 and "differ" in changed["text"]


def test_phantom_cache_is_shared(tmp_path_factory):
    assert (phantom_cache(tmp_path_factory) / "s5-n16-tiny" / "labels.csv").is_file()


def test_divergence_stops_with_a_clear_error(tmp_path_factory, tmp_path):
    from training.loop import TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match="non-finite training loss at epoch 1"):
        train(tiny_config(tmp_path_factory, "optim.lr=1e30"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.safetensors").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_uses_bf16_and_channels_last(tmp_path_factory, tmp_path):
    out = tmp_path / "cuda"
    result = train(tiny_config(tmp_path_factory, "train.device=cuda", "train.num_workers=2"), out, progress=False)
    info = json.loads((out / "run.json").read_text())
    assert info["amp"] == "bf16" and info["channels_last"] is True and info["machine"]["gpu"]
    assert all(np.isfinite(r["train_loss"]) for r in read_metrics(out))
    assert set(result.test["table"]) == {"malignancy_auc", "malignancy_f1_macro", "birads_auc", "birads_f1_macro"}
