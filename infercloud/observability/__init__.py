"""The operator's view: metrics names (metrics.py), traces (tracing.py)."""
