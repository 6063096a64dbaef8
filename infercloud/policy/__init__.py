"""Governance rules evaluated at the gateway (issue 20). So far, pure and tested but not yet wired into the
gateway: personal-data detectors and their redaction of whole texts and of streams (detectors.py, redact.py),
tool rules: allow-lists with conditions on call arguments, by mode (tools.py), and the audit log in SQL
(audit.py). Rule specs in the config, the gateway hook, /admin/audit and evaluation are not built yet."""
