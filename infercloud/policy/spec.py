"""PolicySpec: one governance rule as the config (`policies:`) or the admin API (/admin/policies) declares it,
checking its own fields, and `compile_rule`, which makes the rule object its kind's file evaluates.

YAML (under the server config's `policies:`; a gateway with `tenancy` only):

    policies:
      - name: payments-tools           # unique; named in every refusal and audit row
        kind: tools                    # tools | guard | conversation
        tenants: [acme]                # whose requests it applies to ("*": every tenant)
        keys: [ci-bot]                 # optional: only requests made with these keys (names or sk-ic- prefixes)
        mode: enforce                  # enforce | log_only (decisions recorded, nothing changed)
        allow: [get_balance, transfer] # tools: the functions a request may offer and a reply may call
        conditions:                    # tools: per function, tests on call arguments
          transfer: {amount: {max: 100}, currency: {in: [EUR, USD]}}
        action: strip                  # tools: refuse (default) | strip
      - name: no-cards
        kind: guard
        tenants: [acme]
        direction: both                # guard: input | output | both
        detect: [card, iban]           # guard: email | phone | card | iban
        patterns:                      # guard: configured detectors, kind -> regular expression and longest match
          employee_id: {pattern: "E-\\d{6}", max_chars: 8}
        action: redact                 # guard: block (default) | redact
      - name: short-conversations
        kind: conversation
        tenants: ["*"]
        max_turns: 50                  # conversation: any of these three
        max_tool_calls: 20
        max_total_tokens: 200000
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from infercloud.config_loader import SpecFieldError, short_repr
from infercloud.policy.conversation import ConversationRule
from infercloud.policy.decision import MODES
from infercloud.policy.detectors import BUILT_IN, custom
from infercloud.policy.guards import GuardRule
from infercloud.policy.tools import ToolRule

KINDS = ("tools", "guard", "conversation")
ACTIONS = {"tools": ("refuse", "strip"), "guard": ("block", "redact"), "conversation": ("refuse",)}
DIRECTIONS = ("input", "output", "both")
EVERY_TENANT = "*"
MAX_RULE_NAME = 100
Rule = ToolRule | GuardRule | ConversationRule


@dataclass(frozen=True)
class PolicySpec:
    name: str
    kind: str
    tenants: tuple[str, ...] = ()
    keys: tuple[str, ...] | None = None
    mode: str = "enforce"
    action: str | None = None                 # default: refuse (tools, conversation), block (guard)
    allow: tuple[str, ...] = ()
    conditions: dict[str, Any] = field(default_factory=dict)
    direction: str = "both"
    detect: tuple[str, ...] = ()
    patterns: dict[str, Any] = field(default_factory=dict)
    max_turns: int | None = None
    max_tool_calls: int | None = None
    max_total_tokens: int | None = None

    def applies_to(self, tenant: str, key_name: str | None, key_prefix: str) -> bool:
        return (EVERY_TENANT in self.tenants or tenant in self.tenants) and \
            (self.keys is None or key_prefix in self.keys or (key_name is not None and key_name in self.keys))

    def describe(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def check(self) -> None:
        """Raise SpecFieldError naming the first field out of its range; compiles the rule to check it."""
        problem = next(self._problems(), None)
        if problem is not None:
            raise SpecFieldError(*problem)
        compile_rule(self)

    def _problems(self) -> Iterator[tuple[str, str]]:
        if not (isinstance(self.name, str) and 1 <= len(self.name) <= MAX_RULE_NAME and self.name.isprintable()):
            yield "name", f"must be 1 to {MAX_RULE_NAME} printable characters, got {short_repr(self.name)}"
        if self.kind not in KINDS:
            yield "kind", f"must be one of {', '.join(KINDS)}, got {short_repr(self.kind)}"
            return
        if not self.tenants:
            yield "tenants", f"name the tenants it applies to ({EVERY_TENANT!r}: every tenant)"
        if self.keys is not None and not self.keys:
            yield "keys", "name at least one key (leave it out for every key of its tenants)"
        if self.mode not in MODES:
            yield "mode", f"must be one of {', '.join(MODES)}, got {short_repr(self.mode)}"
        if self.action is not None and self.action not in ACTIONS[self.kind]:
            yield "action", f"a {self.kind} rule's action is one of {', '.join(ACTIONS[self.kind])}, " \
                            f"got {short_repr(self.action)}"
        if self.kind == "tools" and not isinstance(self.conditions, dict):
            yield "conditions", "must map function names to argument tests"
        if self.kind == "guard":
            if self.direction not in DIRECTIONS:
                yield "direction", f"must be one of {', '.join(DIRECTIONS)}, got {short_repr(self.direction)}"
            unknown = [d for d in self.detect if d not in BUILT_IN]
            if unknown:
                yield "detect", f"unknown detector {short_repr(unknown[0])} (built in: {', '.join(BUILT_IN)})"
            if not self.detect and not self.patterns:
                yield "detect", "name a built-in detector or give `patterns`"
        if self.kind == "conversation":
            limits = ("max_turns", "max_tool_calls", "max_total_tokens")
            if all(getattr(self, n) is None for n in limits):
                yield "max_turns", "a conversation rule sets max_turns, max_tool_calls or max_total_tokens"
            for n in limits:
                value = getattr(self, n)
                if value is not None and not (isinstance(value, int) and value >= 0):
                    yield n, f"must be a whole number, 0 or more, got {short_repr(value)}"


def compile_rule(spec: PolicySpec) -> Rule:
    """The rule object of a checked spec (SpecFieldError for conditions or patterns that cannot compile)."""
    if spec.kind == "tools":
        try:
            return ToolRule(spec.name, tuple(spec.allow), dict(spec.conditions), spec.action or "refuse", spec.mode)
        except (ValueError, TypeError, AttributeError) as exc:
            raise SpecFieldError("conditions", str(exc)) from None
    if spec.kind == "guard":
        detectors = [BUILT_IN[d] for d in spec.detect]
        for kind, pattern in spec.patterns.items():
            try:
                detectors.append(custom(str(kind), pattern["pattern"], int(pattern["max_chars"])))
            except (KeyError, TypeError, ValueError, re.error) as exc:
                raise SpecFieldError(f"patterns.{kind}", "needs `pattern` (a regular expression) and `max_chars` "
                                                         f"(1 to 4096): {exc}") from None
        return GuardRule(spec.name, tuple(detectors), spec.action or "block", spec.mode,
                         input=spec.direction in ("input", "both"), output=spec.direction in ("output", "both"))
    return ConversationRule(spec.name, spec.max_turns, spec.max_tool_calls, spec.max_total_tokens, spec.mode)
