"""``python -m training ...`` is ``mammo-train ...`` (and what ``torchrun -m training`` runs)."""

from __future__ import annotations

import sys

from training.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
