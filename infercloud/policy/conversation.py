"""Conversation limits: how long one conversation may go on, in user turns, tool calls and total tokens.

A chat completion carries its conversation in `messages` (user turns; the assistant's tool calls in the
history); a Responses API continuation is the stored conversation its `previous_response_id` belongs to
(every stored response under the same first response: turns, function calls in the outputs, and the
tokens all of them used). The request that would go past a limit is refused (`refuse`, or only logged in
`log_only` mode): its turn would be turn `max_turns + 1`, or the conversation already holds more than
`max_tool_calls` calls or `max_total_tokens` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from infercloud.policy.decision import Decision, Mode


@dataclass(frozen=True)
class Conversation:
    turns: int                        # user turns, this request's included
    tool_calls: int                   # calls made so far
    total_tokens: int | None = None   # tokens used so far (known for stored Responses conversations)


@dataclass(frozen=True)
class ConversationRule:
    name: str
    max_turns: int | None = None
    max_tool_calls: int | None = None
    max_total_tokens: int | None = None
    mode: Mode = "enforce"


def check_conversation(rule: ConversationRule, conversation: Conversation) -> list[Decision]:
    out = []
    for limit, value, what in ((rule.max_turns, conversation.turns, "turns"),
                               (rule.max_tool_calls, conversation.tool_calls, "tool calls"),
                               (rule.max_total_tokens, conversation.total_tokens, "total tokens")):
        if limit is not None and value is not None and value > limit:
            out.append(Decision(rule.name, rule.mode, "refuse", f"conversation: {what} above {limit}"))
    return out
