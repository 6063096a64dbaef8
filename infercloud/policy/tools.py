"""Tool rules: which functions a request may offer and which calls a reply may carry, with conditions on the
calls' arguments. Pure functions of a request's tool names and a reply's calls; each returns Decisions.

A rule names the functions it allows (`allow`; others are not allowed) and, per function, conditions on
arguments: `{"amount": {"max": 100}}` (a number at most), `{"min": ...}`, `{"in": [...]}` (one of these
values), `{"required": true}`. For a request: every offered function outside `allow` is a decision. For a
reply: every call to a function outside `allow`, or whose arguments break a condition (arguments that are
not a JSON object break every condition), is a decision. `action` says what enforcing it does: `refuse`
(the request or reply is refused) or `strip` (the offending tool or call is removed). In `log_only` mode a
decision is only recorded. A decision names what matched (function, argument, rule), never argument values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from infercloud.policy.decision import Decision, Mode, enforced

Action = Literal["refuse", "strip"]


@dataclass(frozen=True)
class ToolRule:
    name: str
    allow: tuple[str, ...]
    conditions: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)   # function -> arg -> test
    action: Action = "refuse"
    mode: Mode = "enforce"

    def __post_init__(self) -> None:
        for function, tests in self.conditions.items():
            if function not in self.allow:
                raise ValueError(f"rule {self.name!r}: conditions on {function!r}, which `allow` does not name")
            for arg, test in tests.items():
                unknown = set(test) - {"max", "min", "in", "required"}
                if unknown:
                    raise ValueError(f"rule {self.name!r}: {function}.{arg}: unknown test {sorted(unknown)[0]!r}")


def check_offered(rule: ToolRule, functions: list[str]) -> list[Decision]:
    """The functions a request offers (its `tools`) that the rule does not allow."""
    return [Decision(rule.name, rule.mode, rule.action, f"offered {name}", i)
            for i, name in enumerate(functions) if name not in rule.allow]


def check_calls(rule: ToolRule, calls: list[tuple[str, str]]) -> list[Decision]:
    """A reply's tool calls ((function name, arguments as JSON text)) that the rule refuses."""
    out = []
    for i, (name, arguments) in enumerate(calls):
        broken = f"call {name}: not allowed" if name not in rule.allow else _broken(rule, name, arguments)
        if broken is not None:
            out.append(Decision(rule.name, rule.mode, rule.action, broken, i))
    return out


def _broken(rule: ToolRule, name: str, arguments: str) -> str | None:
    tests = rule.conditions.get(name) or {}
    if not tests:
        return None
    try:
        args = json.loads(arguments)
    except ValueError:
        args = None
    if not isinstance(args, dict):
        return f"call {name}: arguments are not a JSON object"
    for arg, test in tests.items():
        if arg not in args:
            if test.get("required"):
                return f"call {name}: {arg} missing"
            continue
        value = args[arg]
        if "in" in test and value not in test["in"]:
            return f"call {name}: {arg} not among the allowed values"
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ("max" in test or "min" in test) and not numeric:
            return f"call {name}: {arg} is not a number"
        if "max" in test and value > test["max"]:
            return f"call {name}: {arg} above max"
        if "min" in test and value < test["min"]:
            return f"call {name}: {arg} below min"
    return None


def strip_calls(calls: list, decisions: list[Decision]) -> list:
    """The calls (or offered tools) without those an enforced `strip` decision names."""
    dropped = {d.index for d in enforced(decisions) if d.action == "strip"}
    return [call for i, call in enumerate(calls) if i not in dropped]


__all__ = ["Decision", "ToolRule", "check_calls", "check_offered", "enforced", "strip_calls"]
