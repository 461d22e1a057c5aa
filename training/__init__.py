"""Training entry point: ``python -m training`` is ``fraudops train``."""
