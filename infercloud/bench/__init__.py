"""Benchmarks: request sets, drivers and peers that measure the engine (see docs/benchmarks.md)."""
