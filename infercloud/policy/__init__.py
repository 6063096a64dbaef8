"""Governance rules evaluated at the gateway (issue 20). So far: personal-data detectors and their redaction of
whole texts and of streams (detectors.py, redact.py); rules, modes and the audit log are not built yet."""
