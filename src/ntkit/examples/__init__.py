"""Worked examples that the command line runs (``ntkit example``)."""
