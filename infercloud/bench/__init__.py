"""Benchmarks: request sets, drivers and peers that measure the engine (see BENCHMARKS.md)."""
