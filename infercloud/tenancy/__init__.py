"""Tenants, API keys, limits and budgets: who may ask, and how much."""
