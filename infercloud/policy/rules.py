"""RuleSet: the compiled rules that apply to one tenant's key, evaluated against a request and a reply.

  request   tools rules: every offered function outside a rule's allow-list (check_offered); input guards:
            each text with personal data (check_texts); conversation rules: the turns and tool calls the
            messages carry (check_conversation). An enforced refuse/block decision refuses the request; else
            enforced `strip` decisions remove the offered tools they name and enforced `redact` decisions
            redact the texts they name, in a copy of the body.
  reply     output guards on each choice's text; tools rules on each choice's calls (check_calls). An
            enforced refuse/block refuses the reply; else calls are stripped and texts redacted. A choice
            left with no calls finishes with `stop`. Where text was redacted, token logprobs and ids are
            dropped too (they would spell the text out).
Pure: no I/O. A stream's reply is screened by policy/stream.py with the same rules.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from infercloud.policy.conversation import Conversation, ConversationRule, check_conversation
from infercloud.policy.decision import Decision, first_refusal
from infercloud.policy.guards import GuardRule, check_texts, redact_texts
from infercloud.policy.tools import ToolRule, check_calls, check_offered, strip_calls
from infercloud.policy.view import reply_view, request_view, with_texts, without_tools

EXPOSING = ("logprobs", "token_ids")   # a choice's fields that spell its text out


@dataclass(frozen=True)
class Screened:
    body: dict                                  # what to send on (the original when nothing changed)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def refusal(self) -> Decision | None:
        return first_refusal(self.decisions)


@dataclass(frozen=True)
class RuleSet:
    tools: tuple[ToolRule, ...] = ()
    guards: tuple[GuardRule, ...] = ()
    conversations: tuple[ConversationRule, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.tools or self.guards or self.conversations)

    @property
    def output_guards(self) -> tuple[GuardRule, ...]:
        return tuple(g for g in self.guards if g.output)

    @property
    def watches_replies(self) -> bool:
        return bool(self.tools or self.output_guards)

    def screen_request(self, body: dict, conversation: Conversation | None = None) -> Screened:
        view = request_view(body)
        inputs = [g for g in self.guards if g.input]
        offered = [d for rule in self.tools for d in check_offered(rule, list(view.tools))]
        decisions = list(offered)
        for guard in inputs:
            decisions += check_texts(guard, view.texts, "input")
        conversation = conversation or Conversation(view.turns, view.tool_calls)
        for rule in self.conversations:
            decisions += check_conversation(rule, conversation)
        if not any(d.enforced for d in decisions) or first_refusal(decisions) is not None:
            return Screened(body, decisions)
        out = body
        redacted = redact_texts(inputs, view.texts, decisions)
        if redacted:
            out = with_texts(out, redacted)
        if any(d.enforced and d.action == "strip" for d in offered):
            out = without_tools(out, strip_calls(list(body["tools"]), offered))
        return Screened(out, decisions)

    def screen_reply(self, answer: dict) -> Screened:
        """A chat.completion's or text_completion's JSON."""
        if not self.watches_replies:
            return Screened(answer)
        view = reply_view(answer)
        decisions: list[Decision] = []
        for guard in self.output_guards:
            decisions += check_texts(guard, view.texts, "output")
        stripped: dict[int, list] = {}
        for choice, calls in view.calls:
            found = [d for rule in self.tools for d in check_calls(rule, list(calls))]
            decisions += found
            if any(d.enforced and d.action == "strip" for d in found):
                stripped[choice] = strip_calls(answer["choices"][choice]["message"]["tool_calls"], found)
        if not any(d.enforced for d in decisions) or first_refusal(decisions) is not None:
            return Screened(answer, decisions)
        redacted = redact_texts(self.output_guards, view.texts, decisions)
        out = with_texts(answer, redacted) if redacted else copy.deepcopy(answer)
        for choice, calls in stripped.items():
            strip_choice_calls(out["choices"][choice], calls)
        for where in redacted:
            for name in EXPOSING:
                out["choices"][where[1]].pop(name, None)
        return Screened(out, decisions)


def strip_choice_calls(choice: dict, calls: list) -> None:
    """A chat choice left with `calls` (none: no tool_calls, and it finishes with `stop`)."""
    message = choice["message"]
    if calls:
        message["tool_calls"] = calls
        return
    message.pop("tool_calls", None)
    if message.get("content") is None:
        message["content"] = ""
    if choice.get("finish_reason") == "tool_calls":
        choice["finish_reason"] = "stop"
