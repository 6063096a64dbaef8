"""RuleSet and StreamGuard: a request and a reply screened by tools rules, guards and conversation limits;
the PolicySpec checks; the PolicyBook's per-tenant, per-key rule sets from the config and the table."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random

import pytest

from infercloud.config_loader import SpecFieldError
from infercloud.policy.book import PolicyBook
from infercloud.policy.conversation import Conversation
from infercloud.policy.rules import RuleSet
from infercloud.policy.spec import PolicySpec, compile_rule
from infercloud.policy.stream import StreamGuard
from infercloud.store.database import open_database
from infercloud.tenancy.admission import Principal
from infercloud.tenancy.store import ApiKey, Tenant
from infercloud.config import TenantSpec

CARD = "4111 1111 1111 1111"


def rules(*specs: PolicySpec) -> RuleSet:
    compiled = [compile_rule(s) for s in specs]
    kinds = {"tools": [], "guard": [], "conversation": []}
    for spec, rule in zip(specs, compiled):
        kinds[spec.kind].append(rule)
    return RuleSet(tuple(kinds["tools"]), tuple(kinds["guard"]), tuple(kinds["conversation"]))


def tools_rule(**kw) -> PolicySpec:
    return PolicySpec("pay", "tools", tenants=("a",), allow=("transfer",),
                      conditions={"transfer": {"amount": {"max": 100}}}, **kw)


def guard_rule(**kw) -> PolicySpec:
    return PolicySpec("pii", "guard", tenants=("a",), detect=("card", "email"), **kw)


def tool(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def call(name: str, args: dict) -> dict:
    return {"id": f"call-{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def answer(content=None, calls=None) -> dict:
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop",
         "logprobs": {"content": []}}]}


def test_offered_tools_outside_the_allow_list_are_stripped_or_refuse_the_request():
    body = {"model": "m", "messages": [{"role": "user", "content": "pay"}], "tools": [tool("transfer"), tool("drop")],
            "tool_choice": {"type": "function", "function": {"name": "drop"}}}
    stripped = rules(tools_rule(action="strip")).screen_request(body)
    assert [d.what for d in stripped.decisions] == ["offered drop"] and stripped.refusal is None
    assert [t["function"]["name"] for t in stripped.body["tools"]] == ["transfer"]
    assert "tool_choice" not in stripped.body and len(body["tools"]) == 2   # the original is never edited
    refused = rules(tools_rule()).screen_request(body)
    assert refused.refusal.rule == "pay" and refused.body is body
    logged = rules(tools_rule(mode="log_only", action="strip")).screen_request(body)
    assert logged.body is body and logged.refusal is None and logged.decisions[0].mode == "log_only"
    only_bad = rules(tools_rule(action="strip")).screen_request({**body, "tools": [tool("drop")]})
    assert "tools" not in only_bad.body and "tool_choice" not in only_bad.body


def test_a_reply_call_that_breaks_a_condition_is_stripped_refused_or_only_logged():
    reply = answer(calls=[call("transfer", {"amount": 500}), call("transfer", {"amount": 5})])
    stripped = rules(tools_rule(action="strip")).screen_reply(reply)
    assert [d.what for d in stripped.decisions] == ["call transfer: amount above max"]
    assert [json.loads(c["function"]["arguments"]) for c in stripped.body["choices"][0]["message"]["tool_calls"]] \
        == [{"amount": 5}]
    assert rules(tools_rule()).screen_reply(reply).refusal.what == "call transfer: amount above max"
    logged = rules(tools_rule(mode="log_only", action="strip")).screen_reply(reply)
    assert logged.body is reply and len(logged.decisions) == 1
    alone = rules(tools_rule(action="strip")).screen_reply(answer(calls=[call("transfer", {"amount": 500})]))
    choice = alone.body["choices"][0]
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == ""


def test_input_guards_redact_or_block_and_say_where_never_what():
    body = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": [{"type": "text", "text": f"card {CARD} ok"}]}]}
    redacted = rules(guard_rule(action="redact")).screen_request(body)
    assert redacted.body["messages"][1]["content"][0]["text"] == "card [CARD] ok"
    assert [d.what for d in redacted.decisions] == ["input: card in messages[1].content[0].text"]
    assert CARD not in json.dumps([d.describe() for d in redacted.decisions])
    assert rules(guard_rule()).screen_request(body).refusal.action == "block"
    assert rules(guard_rule(direction="output")).screen_request(body).decisions == []
    completion = rules(guard_rule(action="redact")).screen_request({"model": "m", "prompt": [f"a@b.example {CARD}"]})
    assert completion.body["prompt"] == ["[EMAIL] [CARD]"]


def test_output_guards_redact_json_replies_and_drop_their_logprobs():
    reply = answer(f"Your card is {CARD}.")
    screened = rules(guard_rule(action="redact")).screen_reply(reply)
    choice = screened.body["choices"][0]
    assert choice["message"]["content"] == "Your card is [CARD]." and "logprobs" not in choice
    assert rules(guard_rule()).screen_reply(reply).refusal.rule == "pii"
    assert rules(guard_rule(direction="input")).screen_reply(reply).decisions == []


def test_conversation_limits_count_turns_and_calls_of_the_messages_or_the_stored_conversation():
    limit = PolicySpec("short", "conversation", tenants=("a",), max_turns=2, max_tool_calls=1, max_total_tokens=100)
    messages = [{"role": "user", "content": "1"}, {"role": "assistant", "content": None,
                                                   "tool_calls": [call("transfer", {})]},
                {"role": "tool", "content": "ok"}, {"role": "user", "content": "2"}]
    assert rules(limit).screen_request({"messages": messages}).decisions == []
    third = rules(limit).screen_request({"messages": [*messages, {"role": "user", "content": "3"}]})
    assert third.refusal.what == "conversation: turns above 2"
    stored = rules(limit).screen_request({}, Conversation(turns=2, tool_calls=2, total_tokens=101))
    assert [d.what for d in stored.decisions] == ["conversation: tool calls above 1", "conversation: total tokens above 100"]


def stream_chunks(text: str, cuts: list[int], calls: list[dict] | None = None) -> list[dict]:
    chunks = [{"id": "s", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    for a, b in zip([0, *cuts], [*cuts, len(text)]):
        chunks.append({"id": "s", "choices": [{"index": 0, "delta": {"content": text[a:b]}, "finish_reason": None,
                                               "logprobs": {"content": [{"token": text[a:b]}]}}]})
    for i, c in enumerate(calls or []):
        args = c["function"]["arguments"]
        chunks.append({"id": "s", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": i, "id": c["id"], "type": "function", "function": {"name": c["function"]["name"],
                                                                          "arguments": ""}}]}, "finish_reason": None}]})
        for piece in (args[:3], args[3:]):
            chunks.append({"id": "s", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": i, "function": {"arguments": piece}}]}, "finish_reason": None}]})
    chunks.append({"id": "s", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if calls else "stop"}]})
    chunks.append({"id": "s", "choices": [], "usage": {"completion_tokens": 9}})
    return chunks


def run(guard: StreamGuard, chunks: list[dict]) -> list[dict]:
    return [out for c in chunks for out in guard.feed(c)]


def test_a_card_split_across_stream_chunks_is_redacted_for_any_split():
    text = f"Sure. Your card number is {CARD} and the mail is someone@example.com, bye."
    rng = random.Random(7)
    for _ in range(100):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 25)))
        guard = StreamGuard(rules(guard_rule(action="redact")))
        out = run(guard, stream_chunks(text, cuts))
        joined = "".join(c["choices"][0]["delta"].get("content") or "" for c in out if c["choices"])
        assert joined == "Sure. Your card number is [CARD] and the mail is [EMAIL], bye."
        assert all("logprobs" not in ch for c in out for ch in c["choices"])
        assert out[-1] == {"id": "s", "choices": [], "usage": {"completion_tokens": 9}}
        assert out[-2]["choices"][0]["finish_reason"] == "stop"
        assert {d.what for d in guard.decisions} == {"output: card in choices[0]", "output: email in choices[0]"}


def test_a_stream_guard_in_log_only_mode_changes_nothing_but_records_and_block_refuses():
    text = f"card {CARD} end"
    logged = StreamGuard(rules(guard_rule(action="redact", mode="log_only")))
    out = run(logged, stream_chunks(text, [3, 9, 14]))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in out if c["choices"]) == text
    assert [d.mode for d in logged.decisions] == ["log_only"]
    blocking = StreamGuard(rules(guard_rule()))
    out = run(blocking, stream_chunks(text, [3, 9, 14]))
    assert blocking.refusal.rule == "pii" and CARD not in json.dumps(out)


def test_streamed_tool_calls_are_held_until_the_choice_finishes_then_stripped_or_refused():
    calls = [call("transfer", {"amount": 500}), call("transfer", {"amount": 7})]
    guard = StreamGuard(rules(tools_rule(action="strip")))
    out = run(guard, stream_chunks("", [], calls))
    sent = [ch["delta"]["tool_calls"] for c in out for ch in c["choices"] if "tool_calls" in ch.get("delta", {})]
    assert sent == [[{"index": 0, "id": "call-transfer", "type": "function",
                      "function": {"name": "transfer", "arguments": '{"amount": 7}'}}]]
    assert [d.what for d in guard.decisions] == ["call transfer: amount above max"]
    only_bad = StreamGuard(rules(tools_rule(action="strip")))
    out = run(only_bad, stream_chunks("", [], calls[:1]))
    assert [c["choices"][0]["finish_reason"] for c in out if c["choices"]][-1] == "stop"
    refusing = StreamGuard(rules(tools_rule()))
    run(refusing, stream_chunks("", [], calls))
    assert refusing.refusal.what == "call transfer: amount above max"


@pytest.mark.parametrize("bad, field", [
    ({"kind": "nope"}, "kind"), ({"tenants": ()}, "tenants"), ({"mode": "audit"}, "mode"),
    ({"action": "redact"}, "action"), ({"conditions": {"other": {"x": {"max": 1}}}}, "conditions"),
    ({"conditions": {"transfer": {"x": {"below": 1}}}}, "conditions"), ({"keys": ()}, "keys")])
def test_a_bad_tools_rule_names_its_field(bad, field):
    spec = PolicySpec(**{"name": "r", "kind": "tools", "tenants": ("a",), "allow": ("transfer",), **bad})
    with pytest.raises(SpecFieldError) as exc:
        spec.check()
    assert exc.value.field == field


@pytest.mark.parametrize("bad, field", [
    ({"detect": ("ssn",)}, "detect"), ({"detect": ()}, "detect"), ({"direction": "sideways"}, "direction"),
    ({"patterns": {"emp": {"pattern": "(", "max_chars": 5}}}, "patterns.emp"),
    ({"patterns": {"emp": {"pattern": "E\\d+"}}}, "patterns.emp")])
def test_a_bad_guard_names_its_field(bad, field):
    spec = PolicySpec(**{"name": "g", "kind": "guard", "tenants": ("a",), "detect": ("card",), **bad})
    with pytest.raises(SpecFieldError) as exc:
        spec.check()
    assert exc.value.field == field


def principal(tenant_id: int, tenant: str, key_id: int, key_name: str | None, prefix: str = "abcdefgh") -> Principal:
    now = dt.datetime(2026, 1, 1)
    return Principal(Tenant(tenant_id, TenantSpec(tenant), now),
                     ApiKey(key_id, tenant_id, prefix, key_name, False, now, None, None))


def test_the_book_gives_each_tenant_and_key_its_own_rules_and_sees_made_rules(tmp_path):
    engine = open_database(f"sqlite:///{tmp_path}/p.db")
    configured = (tools_rule(), PolicySpec("strict", "guard", tenants=("a",), keys=("ci",), detect=("email",)),
                  PolicySpec("all", "conversation", tenants=("*",), max_turns=9))
    now = [0.0]
    book = PolicyBook(configured, engine, cache_s=1.0, clock=lambda: now[0])

    async def main():
        a_ci, a_other, b = principal(1, "a", 1, "ci"), principal(1, "a", 2, None, "zzzzzzzz"), principal(2, "b", 3, "ci")
        assert [r.name for r in (await book.rules_for(a_ci)).guards] == ["strict"]
        assert (await book.rules_for(a_other)).guards == () and len((await book.rules_for(a_other)).tools) == 1
        b_rules = await book.rules_for(b)
        assert b_rules.tools == () and b_rules.guards == () and [r.name for r in b_rules.conversations] == ["all"]
        await book.create(PolicySpec("b-pii", "guard", tenants=("b",), detect=("card",), action="redact"))
        assert [r.name for r in (await book.rules_for(b)).guards] == ["b-pii"]   # at once, on this gateway
        other = PolicyBook(configured, engine, cache_s=1.0, clock=lambda: now[0])
        assert [s.name for s, source in other.specs() if source == "api"] == []
        assert [r.name for r in (await other.rules_for(b)).guards] == ["b-pii"]
        await book.delete("b-pii")
        assert [r.name for r in (await other.rules_for(b)).guards] == ["b-pii"]   # until its cache_s is over
        now[0] = 1.5
        assert (await other.rules_for(b)).guards == ()

    asyncio.run(main())
