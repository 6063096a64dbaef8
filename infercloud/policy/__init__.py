"""Governance rules evaluated at the gateway: one file per kind, each a pure function of a typed view of a
request or reply (view.py): tools.py (allow-lists with conditions on call arguments), guards.py (personal
data, detectors.py, blocked or redacted; streams by redact.py), conversation.py (turns, tool calls and
tokens of a conversation). decision.py is what every rule returns; rules.py and stream.py apply a tenant's
compiled rules (spec.py) to a request, a reply and a stream; book.py holds the config's rules and those
made through the admin API; audit.py records every decision and admin change in SQL. The gateway's hook is
infercloud/gateway/governance.py. See docs/governance.md."""
