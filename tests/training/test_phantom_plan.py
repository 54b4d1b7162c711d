"""Phantom plans: determinism, label columns, and the label mix of a 1,000-study draw."""

from __future__ import annotations

from collections import Counter

import pytest

from training.phantom.plan import (
    FINDINGS,
    LABEL_COLUMNS,
    demo_plan,
    label_rows,
    label_stats,
    plan_studies,
    plan_study,
)


@pytest.fixture(scope="module")
def draw():
    return plan_studies(1000, seed=7)


def test_plan_is_a_function_of_seed_and_index():
    assert plan_study(7, 2) == plan_studies(5, 7)[2]
    assert plan_study(7, 2) == plan_study(7, 2)
    assert plan_study(7, 2) != plan_study(8, 2)
    assert [p.study_id for p in plan_studies(3, 7)] == ["P0001", "P0002", "P0003"]
    with pytest.raises(ValueError):
        plan_study(-1, 0)


def test_label_rows_have_the_contract_columns(draw):
    required = {"study_id", "side", "pathology", "birads", "density", "age", "finding"}
    assert required <= set(LABEL_COLUMNS)
    for plan in draw[:200]:
        rows = label_rows(plan, with_us=True, with_cesm=True)
        assert 1 <= len(rows) <= 2
        assert [r["side"] for r in rows] == [s for s in ("R", "L") if s in plan.breasts]
        for row in rows:
            assert set(row) == set(LABEL_COLUMNS)
            assert row["pathology"] in ("normal", "benign", "malignant")
            assert row["birads"] in (1, 2, 3, 4, 5)
            assert row["density"] in ("A", "B", "C", "D")
            assert row["finding"] in FINDINGS
            assert (row["finding"] == "none") == (row["pathology"] == "normal")
            assert row["views_present"] in ("CC;MLO", "CC", "MLO")
            assert 35 <= row["age"] <= 85


def test_label_mix_of_a_1000_study_draw_is_plausible(draw):
    breasts = [b for p in draw for b in p.breasts.values()]
    pathology = Counter(b.pathology for b in breasts)
    assert pathology["normal"] / len(breasts) > 0.65  # most breasts normal
    assert 0.05 < pathology["malignant"] / len(breasts) < 0.2
    assert 0.05 < pathology["benign"] / len(breasts) < 0.2
    assert set(Counter(b.finding for b in breasts)) == set(FINDINGS)
    assert set(Counter(b.birads for b in breasts)) == {1, 2, 3, 4, 5}
    density = Counter(p.density for p in draw)
    assert set(density) == {"A", "B", "C", "D"}
    assert (density["B"] + density["C"]) / len(draw) > 0.6
    high = [b for b in breasts if b.birads >= 4]
    mid = [b for b in breasts if b.birads in (2, 3)]
    assert sum(b.pathology == "malignant" for b in high) / len(high) > 0.75  # 4-5 mostly malignant
    assert sum(b.pathology == "benign" for b in mid) / len(mid) > 0.55  # 2-3 mostly benign
    discordant = sum(b.discordant for b in breasts) / len(breasts)
    assert 0.01 < discordant < 0.08  # a few discordant cases, on purpose
    assert any(b.pathology == "malignant" and b.birads <= 2 for b in breasts)  # missed cancers
    assert any(b.pathology == "benign" and b.birads == 4 for b in breasts)  # benign biopsies
    subtle = [b.lesion.subtle for b in breasts if b.lesion is not None]
    assert 0.15 < sum(subtle) / len(subtle) < 0.35
    assert sum(len(p.breasts) == 1 for p in draw) > 10  # single-breast studies
    assert sum(len(p.views_present()) == 3 for p in draw) > 10  # a missing view
    assert sum(
        len(p.breasts) == 2 and all(b.pathology != "normal" for b in p.breasts.values()) for p in draw
    ) > 10  # bilateral findings
    assert {p.photometric for p in draw} == {"MONOCHROME1", "MONOCHROME2"}
    assert {p.voi_function for p in draw} == {"LINEAR", "SIGMOID"}
    assert any(p.rle for p in draw) and not all(p.rle for p in draw)


def test_label_stats_prints_the_birads_pathology_table(draw):
    text = label_stats(draw)
    assert text.startswith("1000 studies")
    assert "BI-RADS x pathology" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["BI-RADS", "normal"])
    table = [line.split() for line in lines[header + 1 : header + 6]]
    assert [int(r[0]) for r in table] == [1, 2, 3, 4, 5]
    n_breasts = sum(len(p.breasts) for p in draw)
    assert sum(int(r[1]) + int(r[2]) + int(r[3]) for r in table) == n_breasts


def test_lesions_sit_inside_the_breast_away_from_the_nipple(draw):
    from training.phantom.geometry import inside_breast, lesion_xy

    for plan in draw[:300]:
        for b in plan.breasts.values():
            if b.lesion is None:
                continue
            assert b.lesion.distance_mm >= 18.0
            for view in ("CC", "MLO"):
                x, y = lesion_xy(b.shape, view, b.lesion.distance_mm, b.lesion.alpha, b.lesion.phi)
                assert inside_breast(b.shape, view, x, y, 2.0)


def test_demo_plan_has_one_malignant_and_one_benign_mass():
    plan = demo_plan()
    assert plan.study_id == "P0001"
    left, right = plan.breasts["L"], plan.breasts["R"]
    assert (left.pathology, left.finding, left.lesion.morphology) == ("malignant", "mass", "irregular spiculated")
    assert (right.pathology, right.finding, right.lesion.morphology) == ("benign", "mass", "oval circumscribed")
    assert left.birads == 5 and right.birads == 3
    assert not left.lesion.subtle and not right.lesion.subtle
    assert len(plan.views_present()) == 4
    assert (plan.photometric, plan.voi_function, plan.rle) == ("MONOCHROME2", "LINEAR", False)
