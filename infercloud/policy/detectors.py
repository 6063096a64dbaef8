"""Personal-data detectors: pure functions from text to the spans that hold e-mail addresses, phone numbers,
payment card numbers (Luhn-checked), IBANs (mod-97-checked) or what a configured regular expression matches.

Each detector has a kind, a regular expression and, where the format has one, a checksum that a candidate
must pass (so "4111 1111 1111 1111" is a card and "4111 1111 1111 1112" is not). Each also states the
longest text a match can span (`max_chars`): a stream guard holds back that much of a stream's text and no
more (policy/redact.py), so a number split across chunks is still found whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

KINDS = ("email", "phone", "card", "iban")


@dataclass(frozen=True)
class Match:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern
    max_chars: int                                   # the longest text one match can span
    valid: Callable[[str], bool] = lambda text: True

    def find(self, text: str) -> list[Match]:
        return [Match(self.kind, m.start(), m.end()) for m in self.pattern.finditer(text) if self.valid(m.group())]


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def luhn_ok(text: str) -> bool:
    """The Luhn checksum of a card number's digits (separators ignored), 13 to 19 digits."""
    digits = _digits(text)
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616: move the country code and check digits to the end, letters to numbers, mod 97 == 1."""
    compact = re.sub(r"[\s-]", "", text).upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


# a local part of up to 64 characters, up to 3 domain labels of up to 32 before the top-level domain: longer
# addresses are not recognized (a stream guard would otherwise hold back hundreds of characters)
EMAIL = Detector("email", re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,32}\.){1,3}[A-Za-z]{2,24}"
                                     r"(?![\w-])"), 64 + 1 + 3 * 33 + 24)
# 13-19 digits, optionally grouped by single spaces or dashes (4-4-4-4, 4-6-5, ...)
CARD = Detector("card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), 19 + 18, luhn_ok)
IBAN = Detector("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"), 4 + 2 * 30, iban_ok)
# international (+CC ...) or national numbers of 8-15 digits with common separators
PHONE = Detector("phone", re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)"),
                 5 + 7 + 4 + 4 * 5,
                 lambda text: 8 <= len(_digits(text)) <= 15 and not luhn_ok(text))
BUILT_IN = {d.kind: d for d in (EMAIL, CARD, IBAN, PHONE)}


def custom(kind: str, pattern: str, max_chars: int) -> Detector:
    """A configured detector: a regular expression and the longest text it may match (a stream guard's
    hold-back must know it; a pattern that can match more is cut at that length)."""
    if not 1 <= max_chars <= 4096:
        raise ValueError(f"max_chars must be between 1 and 4096, got {max_chars}")
    return Detector(kind, re.compile(pattern), max_chars, lambda text: len(text) <= max_chars)


def detect(text: str, detectors: Iterable[Detector]) -> list[Match]:
    """Every detector's matches, in text order; where two overlap, the one starting first (then the longer)
    wins, so a card number is not also reported as a phone number."""
    found = sorted((m for d in detectors for m in d.find(text)), key=lambda m: (m.start, -(m.end - m.start)))
    kept: list[Match] = []
    for match in found:
        if not kept or match.start >= kept[-1].end:
            kept.append(match)
    return kept
