"""Widgets of the reading workstation: image views, the four-view grid, panels, the AI panel."""
