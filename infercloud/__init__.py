"""infercloud: an open inference cloud."""

__version__ = "0.1.0"
