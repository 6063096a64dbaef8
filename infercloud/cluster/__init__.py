"""Cluster backends: what starts and stops worker processes (local subprocesses now; Ray later)."""
