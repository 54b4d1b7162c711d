"""Shared fixtures. Qt runs offscreen; tests that need ../shared/realdata skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run (benchmarks/long training)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata``; skips the test when the folder is absent (as on a user's machine)."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder not present: {REALDATA}")
    return REALDATA
