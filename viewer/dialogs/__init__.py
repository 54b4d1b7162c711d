"""Dialogs of the reading workstation."""
