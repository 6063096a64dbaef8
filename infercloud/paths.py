"""Where infercloud keeps its files: $INFERCLOUD_HOME, else ~/.cache/infercloud."""

from __future__ import annotations

import os
from pathlib import Path


def infercloud_home() -> Path:
    """The root of infercloud's local state: $INFERCLOUD_HOME or ~/.cache/infercloud."""
    configured = os.environ.get("INFERCLOUD_HOME")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "infercloud"
