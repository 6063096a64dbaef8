"""Guards: personal data in a request's texts (input) or a reply's (output), blocked or redacted.

A guard rule names detectors (policy/detectors.py: e-mail, phone, Luhn-checked card numbers, mod-97-checked
IBANs, configured patterns) and an action: `block` refuses the request (or the reply) outright, `redact`
replaces each match by a placeholder such as [CARD]. `check_texts` returns one Decision per text with a
match, naming the kinds found and where ("input: card, email in messages[1].content"), never the text.
`redact_texts` is what enforcing the `redact` decisions does to those texts. A stream's output is redacted
as it goes by policy/redact.StreamRedactor, holding back only as much text as a match can span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from infercloud.policy.decision import Decision, Mode
from infercloud.policy.detectors import Detector, detect
from infercloud.policy.redact import redact
from infercloud.policy.view import Where, label

Action = Literal["block", "redact"]


@dataclass(frozen=True)
class GuardRule:
    name: str
    detectors: tuple[Detector, ...]
    action: Action = "block"
    mode: Mode = "enforce"
    input: bool = True
    output: bool = True


def check_texts(rule: GuardRule, texts: Sequence[tuple[Where, str]], side: str) -> list[Decision]:
    """One decision per text holding personal data this rule detects."""
    out = []
    for i, (where, text) in enumerate(texts):
        kinds = sorted({m.kind for m in detect(text, rule.detectors)})
        if kinds:
            out.append(Decision(rule.name, rule.mode, rule.action, f"{side}: {', '.join(kinds)} in {label(where)}", i))
    return out


def redact_texts(rules: Sequence[GuardRule], texts: Sequence[tuple[Where, str]],
                 decisions: Sequence[Decision]) -> dict[Where, str]:
    """The texts the enforced `redact` decisions name, each redacted with its rules' detectors."""
    detectors: dict[int, list[Detector]] = {}
    by_name = {r.name: r for r in rules}
    for d in decisions:
        if d.enforced and d.action == "redact" and d.rule in by_name:
            detectors.setdefault(d.index, []).extend(by_name[d.rule].detectors)
    return {texts[i][0]: redact(texts[i][1], found)[0] for i, found in detectors.items()}
