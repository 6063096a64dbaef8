"""The live replica set: one writer (the controller, or the link mirroring it) for membership and state."""
