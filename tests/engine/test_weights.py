"""Model cards, sha256-checked safetensors weights, the registry of bundled models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _inference_toys import ToyConfig, ToyFourView, build_toy, toy_card

import engine
from engine.errors import ModelError, UnknownModelError, WeightsMismatchError
from engine.weights import (
    CARD_FILE,
    MODELS_DIR_ENV,
    WEIGHTS_FILE,
    checkpoint_filter,
    default_models_dir,
    find_model,
    list_models,
    load_model,
    read_card,
    save_model,
    sha256_file,
)


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[ToyFourView, Path]:
    torch.manual_seed(0)
    model = ToyFourView(ToyConfig())
    out = tmp_path / "models" / "toy-four-view"
    save_model(model, toy_card(model), out)
    return model, out


def test_save_then_load_gives_the_same_weights_and_card(saved) -> None:
    model, out = saved
    assert (out / WEIGHTS_FILE).is_file() and (out / CARD_FILE).is_file()
    card = read_card(out)
    assert card.sha256 == sha256_file(out / WEIGHTS_FILE)
    assert card.name == "toy-four-view" and card.version == "0.0.1" and card.family == "toy"
    assert card.architecture == model.config.to_dict()
    assert card.trained and card.training["command"] == "pytest"
    loaded, card2 = load_model(out, build=build_toy)
    assert not loaded.training  # eval mode
    ref = model.state_dict()
    got = loaded.state_dict()
    assert set(ref) == set(got)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    # unknown keys of the JSON survive a read/write round trip
    data = json.loads((out / CARD_FILE).read_text())
    assert "saved" in data and card2.to_dict()["saved"] == data["saved"]


def test_tampered_weights_are_refused_with_one_line_naming_the_file(saved) -> None:
    _, out = saved
    raw = bytearray((out / WEIGHTS_FILE).read_bytes())
    raw[-3] ^= 0xFF
    (out / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(WeightsMismatchError) as info:
        load_model(out, build=build_toy)
    msg = str(info.value)
    assert "\n" not in msg and WEIGHTS_FILE in msg and "sha256" in msg


def test_architecture_mismatch_is_refused(saved) -> None:
    _, out = saved
    card = json.loads((out / CARD_FILE).read_text())
    card["architecture"]["width"] = 4  # the file holds width-8 tensors
    (out / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(WeightsMismatchError) as info:
        load_model(out, build=build_toy)
    msg = str(info.value)
    assert "\n" not in msg and WEIGHTS_FILE in msg and "shape mismatch" in msg

    card["architecture"]["width"] = 8
    card["architecture"]["tasks"] = ["birads"]  # the file has malignancy heads too
    (out / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(WeightsMismatchError, match="unexpected key"):
        load_model(out, build=build_toy)


def test_missing_or_non_safetensors_weights_are_refused(saved) -> None:
    _, out = saved
    card = json.loads((out / CARD_FILE).read_text())
    card["weights_file"] = "model.pt"
    (out / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(WeightsMismatchError, match="only .safetensors"):
        load_model(out, build=build_toy)
    card["weights_file"] = WEIGHTS_FILE
    (out / CARD_FILE).write_text(json.dumps(card))
    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(WeightsMismatchError, match="missing"):
        load_model(out, build=build_toy)


def test_garbage_weights_with_matching_hash_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "junk"
    out.mkdir()
    (out / WEIGHTS_FILE).write_bytes(b"\x00\x01not a safetensors file" * 4)
    model = ToyFourView(ToyConfig())
    card = toy_card(model, "junk")
    card["sha256"] = sha256_file(out / WEIGHTS_FILE)
    (out / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(WeightsMismatchError, match="not a readable safetensors"):
        load_model(out, build=build_toy)


def test_registry_lists_only_trained_models(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "models"
    model = ToyFourView(ToyConfig())
    save_model(model, toy_card(model, "b-trained"), root / "b-trained")
    untrained = toy_card(model, "a-untrained")
    untrained["training"] = {"date": "2025-01-01"}  # no config, no command
    save_model(model, untrained, root / "a-untrained")
    (root / "broken").mkdir()
    (root / "broken" / CARD_FILE).write_text("{not json")
    (root / "empty").mkdir()
    assert [c.name for c in list_models(root)] == ["b-trained"]
    monkeypatch.setenv(MODELS_DIR_ENV, str(root))
    assert default_models_dir() == root
    assert [c.name for c in engine.list_models()] == ["b-trained"]
    with pytest.raises(UnknownModelError) as info:
        find_model("a-untrained")
    assert "b-trained" in str(info.value) and "\n" not in str(info.value)
    # a path still opens an untrained export
    assert find_model(root / "a-untrained").name == "a-untrained"
    assert list_models(tmp_path / "nowhere") == []


def test_default_models_dir_is_next_to_the_package(monkeypatch) -> None:
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    assert default_models_dir() == Path(engine.__file__).resolve().parents[1] / "resources" / "models"


def test_invalid_card_names_the_file(tmp_path: Path) -> None:
    (tmp_path / CARD_FILE).write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError) as info:
        read_card(tmp_path)
    assert CARD_FILE in str(info.value) and "architecture" in str(info.value)


def test_checkpoint_filter_strips_wrapper_prefixes() -> None:
    t = torch.zeros(1)
    out = checkpoint_filter({"module.a.weight": t, "_orig_mod.b": t, "c": t})
    assert list(out) == ["a.weight", "b", "c"]


def test_real_registry_model_round_trip(tmp_path: Path) -> None:
    """A small real four-view architecture saved and loaded through the models registry."""
    registry = pytest.importorskip("engine.models.registry")
    cfg = registry.get_preset(
        "vssm-shared", vssm_depths=(1, 1), vssm_dims=(8, 16), in_size=64, fusion_hidden=8, d_state=4
    )
    torch.manual_seed(1)
    model = registry.create_model(cfg, pretrained=False)
    card = {
        "name": "tiny-vssm",
        "version": "0.1",
        "architecture": cfg.to_dict(),
        "training": {"config": {"epochs": 1}, "command": "pytest"},
    }
    save_model(model, card, tmp_path / "tiny-vssm")
    loaded, card2 = load_model("tiny-vssm", tmp_path)
    assert type(loaded) is type(model) and loaded.config == cfg
    assert card2.family == "fourview"
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
