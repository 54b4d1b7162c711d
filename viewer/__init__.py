"""mammo-viewer viewer: the PySide6 + pyqtgraph reading workstation (only package that imports Qt)."""
