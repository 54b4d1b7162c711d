"""The pinned Qt binding must not leak references on signal emission.

PySide6 6.12.0's ``SignalInstance.emit`` returns ``True`` without taking a reference; on Python 3.11
the interpreter aborts (``bool_dealloc``) after a few hundred emissions, and pyqtgraph emits on every
mouse move. pyproject.toml pins a release without the bug; this test keeps it that way.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Probe(QObject):
    probed = Signal(int)


def test_signal_emit_keeps_bool_reference_counts() -> None:
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(500):
        probe.probed.emit(0)
    assert sys.getrefcount(True) >= before - 5
