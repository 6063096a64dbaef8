"""Continuous evaluation of live traffic: a sample of each target's answers scored off the request path.

spec.py (what is scored, by which evaluators), sample.py (an answer as evaluators read it), evaluators.py
(pure scores: json_schema, tool_call, refusal, length, groundedness), judge.py (a served model grades an
answer), store.py (scores in SQL), service.py (sampling, the scoring task, metrics, degraded state),
report.py and cli.py (`infercloud eval report`). The gateway offers answers; nothing here slows one.
"""
