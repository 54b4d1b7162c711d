"""The phantom adapter: a folder written by the phantom writer, and on-the-fly generation."""

from __future__ import annotations

import csv

import pytest

from training.datasets import DatasetLayoutError, Phantom, patient_split
from training.datasets._dicom import read_header


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    from training.phantom.dataset import write_dataset

    out = tmp_path_factory.mktemp("phantom")
    write_dataset(out, 3, 11, size="tiny", with_us=True, with_cesm=True)
    return out


def test_phantom_folder_matches_labels_and_annotations(phantom_dir):
    samples = Phantom(phantom_dir).samples()
    with open(phantom_dir / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(phantom_dir / "annotations.csv", newline="") as fh:
        ann = list(csv.DictReader(fh))
    assert [s.study_id for s in samples] == sorted({r["study_id"] for r in rows})
    by_id = {s.study_id: s for s in samples}
    for r in rows:
        lab = by_id[r["study_id"]].labels[r["side"]]
        assert lab.pathology == r["pathology"] and lab.birads == int(r["birads"])
        assert lab.density == r["density"] and lab.age == float(r["age"]) and lab.finding == r["finding"]
        assert lab.attributes["views_present"] == r["views_present"]
        n_ann = sum(1 for a in ann if a["study_id"] == r["study_id"] and a["side"] == r["side"])
        assert len(lab.lesions) == n_ann
        assert (len(lab.lesions) > 0) == (r["pathology"] != "normal")
    for s in samples:
        for key, path in s.images.items():
            h = read_header(path)
            assert f"{h.side}-{h.view}" == key and h.kind == "MG"
        assert all(e.kind in ("US", "CESM") for e in s.extras)
        assert all(e.cesm_kind in ("low_energy", "recombined") for e in s.extras if e.kind == "CESM")
        for lab in s.labels.values():
            for les in lab.lesions:
                assert les.image.is_file() and all(m.is_file() for m in les.masks)
                x0, y0, x1, y1 = les.box
                assert x0 <= les.centre[0] <= x1 and y0 <= les.centre[1] <= y1
    # lesions on the standard views name their slot: the lesion's image is that slot's file
    mg = [
        (s, les)
        for s in samples
        for lab in s.labels.values()
        for les in lab.lesions
        if les.image in s.images.values()
    ]
    assert mg and all(s.images[les.view] == les.image for s, les in mg)


def test_phantom_generated_on_the_fly_and_reused(tmp_path):
    ds = Phantom.generate(2, seed=5, size="tiny", cache_dir=tmp_path)
    samples = ds.samples()
    assert len(samples) == 2 and all(len(s.images) >= 3 for s in samples)
    assert ds.root == (tmp_path / "s5-n2-tiny").resolve()
    assert ds.generation["seed"] == 5 and ds.generation["studies"] == 2
    stamp = (ds.root / "labels.csv").stat().st_mtime_ns
    again = Phantom(None, studies=2, seed=5, size="tiny", cache_dir=tmp_path)
    assert (again.root / "labels.csv").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [s.labels for s in again.samples()] == [s.labels for s in samples]
    train, test = patient_split(samples, (0.5, 0.5), seed=0)
    assert len(train) == len(test) == 1


def test_phantom_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="labels.csv not found"):
        Phantom(tmp_path).samples()
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(DatasetLayoutError, match="not a phantom folder"):
        Phantom(tmp_path, studies=1, size="tiny")
    assert (tmp_path / "keep.txt").is_file()
