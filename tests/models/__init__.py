"""Tests of infercloud.models: catalog, pull, GGUF conversion, and the models CLI."""
