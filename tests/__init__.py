"""infercloud tests; the layout mirrors the package."""
