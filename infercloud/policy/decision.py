"""Decision: what one rule found in one request or reply. Every rule kind (tools.py, guards.py,
conversation.py) returns Decisions; the gateway audits each one and enforces those in `enforce` mode.

`action` is what enforcing does: `refuse` (the request or reply is refused with a 400 `policy_violation`),
`strip` (the offending tool or call is removed), `block` (a guard's refusal), `redact` (the matched text is
replaced by a placeholder). `what` names what matched (a function, an argument, a kind of personal data and
where it was), never a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["enforce", "log_only"]
MODES = ("enforce", "log_only")
REFUSING = ("refuse", "block")          # actions that refuse the whole request or reply


@dataclass(frozen=True)
class Decision:
    rule: str
    mode: Mode
    action: str
    what: str                    # "offered delete_account", "call transfer: amount above max", "input card ..."
    index: int | None = None     # the tool's, call's or text's position

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    @property
    def refuses(self) -> bool:
        return self.enforced and self.action in REFUSING

    def describe(self) -> dict:
        return {"rule": self.rule, "mode": self.mode, "action": self.action, "what": self.what}


def enforced(decisions: list[Decision]) -> list[Decision]:
    """The decisions that change the request or reply (enforce mode); log_only ones are only recorded."""
    return [d for d in decisions if d.enforced]


def first_refusal(decisions: list[Decision]) -> Decision | None:
    return next((d for d in decisions if d.refuses), None)
