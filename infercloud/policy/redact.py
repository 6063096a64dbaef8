"""Redaction of personal data in whole texts and in streams, holding back only as much text as a match can span.

Stream algorithm (StreamRedactor): text arrives in chunks; `pending` is what has arrived and not been sent.
On each chunk, the detectors run over `pending`; everything up to `len(pending) - hold` may be released, where
`hold` is the longest text any detector can match, less one: a match that starts in the releasable part
ends within `pending` (it spans at most `hold + 1` characters), so it is complete and is redacted whole; a
match that starts later waits for more text. `flush()` releases the rest at the stream's end. Across chunks
the output is the same as redacting the whole text at once (tested), and nothing is held longer than `hold`
characters. Matches of kinds outside `replaced` are found and reported (`matches`) but left in the text (a
rule in log_only mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from infercloud.policy.detectors import Detector, Match, detect


def placeholder(match: Match) -> str:
    return f"[{match.kind.upper()}]"


def redact(text: str, detectors: Sequence[Detector]) -> tuple[str, list[Match]]:
    """`text` with every match replaced by its placeholder, and the matches (positions in `text`)."""
    matches = detect(text, detectors)
    return _replace(text, matches), matches


def _replace(text: str, matches: list[Match]) -> str:
    out, at = [], 0
    for match in matches:
        out.append(text[at:match.start])
        out.append(placeholder(match))
        at = match.end
    out.append(text[at:])
    return "".join(out)


@dataclass
class StreamRedactor:
    detectors: Sequence[Detector]
    replaced: frozenset[str] | None = None                # kinds replaced (None: all); others only reported
    pending: str = ""
    matches: list[Match] = field(default_factory=list)   # every match so far, positions in the whole stream
    released: int = 0                                    # characters of the stream released so far

    @property
    def hold(self) -> int:
        return max((d.max_chars for d in self.detectors), default=1) - 1

    def feed(self, chunk: str) -> str:
        """The text that may be sent now (redacted), for one more chunk of the stream."""
        self.pending += chunk
        return self._release(max(len(self.pending) - self.hold, 0))

    def flush(self) -> str:
        """The rest, at the stream's end."""
        return self._release(len(self.pending))

    def _release(self, upto: int) -> str:
        found = [m for m in detect(self.pending, self.detectors) if m.start < upto]
        if found:
            upto = max(upto, found[-1].end)
        text = _replace(self.pending[:upto], [m for m in found if self.replaced is None or m.kind in self.replaced])
        self.matches += [Match(m.kind, m.start + self.released, m.end + self.released) for m in found]
        self.pending, self.released = self.pending[upto:], self.released + upto
        return text
