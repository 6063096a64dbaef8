"""StreamGuard: a RuleSet's reply rules applied to a streamed reply, chunk by chunk (parsed SSE chunks in,
chunks to send out). Pure: no I/O.

  text        each choice's text (a chat delta's `content`, a completion's `text`) goes through one
              StreamRedactor per choice with every output guard's detectors: only as much text as a match
              can span is held back, and matches of enforced `redact` guards are replaced. A match of an
              enforced `block` guard refuses the reply (`refusal`); others are recorded.
  tool calls  with tools rules, a choice's tool-call deltas are held and merged by index until the choice
              finishes; then its calls are checked, enforced `strip` decisions drop calls, and the calls kept
              go out (renumbered) just before the finishing chunk; an enforced `refuse` refuses the reply.
  finish      a finishing chunk first releases the choice's held text (a chunk of its own, then the calls,
              then the finish); a choice left with no calls finishes with `stop`.
Where output is guarded, choices lose `logprobs` and `token_ids` (they would spell redacted text out).
After a refusal the guard emits nothing more; the caller ends the stream with an error event.
"""

from __future__ import annotations

import copy

from infercloud.policy.decision import Decision, first_refusal
from infercloud.policy.redact import StreamRedactor
from infercloud.policy.rules import EXPOSING, RuleSet
from infercloud.policy.tools import check_calls, strip_calls
from infercloud.policy.view import call_of


class StreamGuard:
    def __init__(self, rules: RuleSet):
        self.rules = rules
        self.guards = rules.output_guards
        self.detectors = tuple({id(d): d for g in self.guards for d in g.detectors}.values())
        self.replaced = frozenset(d.kind for g in self.guards if g.mode == "enforce" and g.action == "redact"
                                  for d in g.detectors)
        self.decisions: list[Decision] = []
        self._redactors: dict[int, StreamRedactor] = {}
        self._calls: dict[int, dict[int, dict]] = {}      # choice -> call index -> merged call

    @property
    def refusal(self) -> Decision | None:
        return first_refusal(self.decisions)

    def feed(self, chunk: dict) -> list[dict]:
        """The chunks to send for one upstream chunk (none once the reply is refused)."""
        if self.refusal is not None:
            return []
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return [chunk]
        out: list[dict] = []
        kept = []
        for choice in choices:
            kept += self._choice(chunk, choice, out)
            if self.refusal is not None:
                return []
        if kept:
            out.append({**chunk, "choices": kept})
        return out

    def _choice(self, chunk: dict, choice: dict, out: list[dict]) -> list[dict]:
        i = choice.get("index", 0)
        choice = copy.deepcopy(choice)
        if self.guards:
            for name in EXPOSING:
                choice.pop(name, None)
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else None
        holder, key = (delta, "content") if delta is not None else (choice, "text")
        if self.guards and isinstance(holder.get(key), str):
            holder[key] = self._text(i, holder[key], final=False)
        if self.rules.tools and delta is not None and isinstance(delta.get("tool_calls"), list):
            self._hold(i, delta.pop("tool_calls"))
        if choice.get("finish_reason") is not None:
            self._finish(chunk, choice, i, holder, key, out)
        if self.refusal is not None:
            return []
        return [choice] if _carries(choice, holder, key) else []

    def _text(self, i: int, text: str, final: bool) -> str:
        redactor = self._redactors.setdefault(i, StreamRedactor(self.detectors, self.replaced))
        seen = len(redactor.matches)
        released = redactor.feed(text) + (redactor.flush() if final else "")
        for match in redactor.matches[seen:]:
            for guard in self.guards:
                decision = Decision(guard.name, guard.mode, guard.action, f"output: {match.kind} in choices[{i}]", i)
                if any(d.kind == match.kind for d in guard.detectors) and decision not in self.decisions:
                    self.decisions.append(decision)
        return released

    def _hold(self, i: int, deltas: list) -> None:
        calls = self._calls.setdefault(i, {})
        for d in deltas:
            if not isinstance(d, dict):
                continue
            call = calls.setdefault(d.get("index", len(calls)), {"id": None, "type": "function",
                                                                 "function": {"name": "", "arguments": ""}})
            call["id"] = d.get("id") or call["id"]
            function = d.get("function") if isinstance(d.get("function"), dict) else {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""

    def _finish(self, chunk: dict, choice: dict, i: int, holder: dict, key: str, out: list[dict]) -> None:
        if self.guards:
            released = self._text(i, holder.get(key) or "", final=True)
            holder[key] = ""
            if released:
                piece = {"index": i, "delta": {"content": released}} if key == "content" else {"index": i,
                                                                                             "text": released}
                out.append({**chunk, "choices": [{**piece, "finish_reason": None}]})
        if not self.rules.tools:
            return
        calls = [c for _, c in sorted(self._calls.pop(i, {}).items())]
        found = [d for rule in self.rules.tools for d in check_calls(rule, [call_of(c) for c in calls])]
        self.decisions += found
        kept = strip_calls(calls, found)
        if kept:
            delta = {"tool_calls": [{"index": n, **c} for n, c in enumerate(kept)]}
            out.append({**chunk, "choices": [{"index": i, "delta": delta, "finish_reason": None}]})
        elif calls and choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "stop"


def _carries(choice: dict, holder: dict, key: str) -> bool:
    """Whether a choice still says something (text, a role, calls, a finish reason, logprobs)."""
    delta = choice.get("delta")
    if isinstance(delta, dict) and any(v not in (None, "") for v in delta.values()):
        return True
    return bool(holder.get(key)) or choice.get("finish_reason") is not None or \
        any(choice.get(k) is not None for k in EXPOSING)
