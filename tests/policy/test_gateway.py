"""Policies on a real gateway: worker processes with the real SmolLM2, tenants and the audit log in SQL
(SQLite, or the PostgreSQL of INFERCLOUD_TEST_POSTGRES_URL).

Tenants acme and globex have the same tools rule, acme's enforced (strip) and globex's log_only; acme also
has a card-redacting guard, an e-mail block for its `ci` key only and a three-turn conversation limit. The
model is made to produce what a rule catches with constrained decoding: a forced `transfer` call whose
`amount` schema allows only 500 (above the rule's max of 100), and a JSON reply whose only allowed value is
a card number (which arrives split over several stream chunks).
"""

# ruff: noqa: F811  (pytest fixtures as parameters shadow the imported `database` fixture)
from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_tenancy import admin, cli, database  # noqa: F401 (database: the fixture)
from tests.worker.conftest import start_server

SMOL = "smollm2-135m-instruct"
CARD = "4111 1111 1111 1111"
TRANSFER = {"type": "function", "function": {"name": "transfer", "description": "Send money.", "parameters": {
    "type": "object", "properties": {"amount": {"type": "integer", "enum": [500]}}, "required": ["amount"]}}}
DROP = {"type": "function", "function": {"name": "drop_tables", "parameters": {"type": "object", "properties": {}}}}
CARD_REPLY = {"type": "json_schema", "json_schema": {"name": "card", "strict": True, "schema": {
    "type": "object", "properties": {"card": {"type": "string", "enum": [CARD]}}, "required": ["card"],
    "additionalProperties": False}}}
PAYMENTS = {"kind": "tools", "allow": ["transfer"], "conditions": {"transfer": {"amount": {"max": 100}}},
            "action": "strip"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, database, smollm2_dir):
    url, _ = database
    config = {
        "cluster": {"threads_per_worker": 1},
        "controller": {"probe_interval_s": 0.25, "unhealthy_after": 2},
        "tenancy": {"database": url, "auth_cache_s": 0.5, "ledger_flush_s": 0.02,
                    "tenants": [{"name": "ops", "tier": "interactive"}, {"name": "acme"}, {"name": "globex"}]},
        "models": [{"name": SMOL, "engine": {"kv_cache_memory_gb": 0.1}}],
        "policies": [
            {"name": "payments", "tenants": ["acme"], **PAYMENTS},
            {"name": "payments-watch", "tenants": ["globex"], **PAYMENTS, "mode": "log_only"},
            {"name": "no-cards", "kind": "guard", "tenants": ["acme"], "detect": ["card"], "action": "redact"},
            {"name": "no-mail-from-ci", "kind": "guard", "tenants": ["acme"], "keys": ["ci"], "direction": "input",
             "detect": ["email"]},
            {"name": "short-talks", "kind": "conversation", "tenants": ["acme"], "max_turns": 3},
        ],
    }
    server = start_server(tmp_path_factory.mktemp("policy-gw"), config, startup_timeout_s=300)
    server.admin_key = cli("keys", "create", "--tenant", "ops", "--admin", "--database", url)
    server.keys = {name: admin(server, "POST", "/admin/keys", json={"tenant": tenant, "name": name}).json()["key"]
                   for name, tenant in (("acme", "acme"), ("ci", "acme"), ("globex", "globex"))}
    yield server
    assert server.stop() == 0, server.log()


def post(gw, key: str, path: str = "/v1/chat/completions", **body) -> httpx.Response:
    defaults = {"max_tokens": 40} if path == "/v1/chat/completions" else {}
    return httpx.post(gw.url + path, headers={"Authorization": f"Bearer {gw.keys[key]}"}, timeout=120,
                      json={"model": SMOL, "temperature": 0, **defaults, **body})


def stream(gw, key: str, **body) -> tuple[list[dict], httpx.Headers]:
    chunks = []
    with httpx.stream("POST", gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {gw.keys[key]}"},
                      json={"model": SMOL, "max_tokens": 40, "temperature": 0, "stream": True, **body},
                      timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks, r.headers


def audit(gw, request_id: str) -> list[dict]:
    return admin(gw, "GET", "/admin/audit", params={"request_id": request_id}).json()["data"]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def forced_transfer(**body) -> dict:
    return {"messages": user("Pay the invoice."), "tools": [TRANSFER, DROP],
            "tool_choice": {"type": "function", "function": {"name": "transfer"}}, **body}


def decision_counts(gw) -> dict[tuple[str, str, str], float]:
    """infercloud_policy_decisions_total from the gateway's /metrics (an admin key reads it)."""
    text = admin(gw, "GET", "/metrics").text
    return {(s.labels["rule"], s.labels["mode"], s.labels["action"]): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "infercloud_policy_decisions_total"}


def test_a_forbidden_tool_call_is_stripped_in_enforce_mode_and_only_logged_in_log_only_mode(gw):
    before = decision_counts(gw)
    enforced = post(gw, "acme", **forced_transfer())
    assert enforced.status_code == 200, enforced.text
    choice = enforced.json()["choices"][0]
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
    policy = enforced.json()["infercloud"]["policy"]
    assert {(d["rule"], d["action"], d["what"]) for d in policy} == {
        ("payments", "strip", "offered drop_tables"), ("payments", "strip", "call transfer: amount above max")}
    assert enforced.headers["x-infercloud-policy"] == "payments=strip"
    rows = audit(gw, enforced.headers["x-request-id"])
    assert sorted((r["rule"], r["mode"], r["what"]) for r in rows) == [
        ("payments", "enforce", "call transfer: amount above max"), ("payments", "enforce", "offered drop_tables")]

    logged = post(gw, "globex", **forced_transfer())
    calls = logged.json()["choices"][0]["message"]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == \
        [("transfer", {"amount": 500})]
    assert "x-infercloud-policy" not in logged.headers
    rows = audit(gw, logged.headers["x-request-id"])
    assert sorted((r["rule"], r["mode"], r["what"]) for r in rows) == [
        ("payments-watch", "log_only", "call transfer: amount above max"),
        ("payments-watch", "log_only", "offered drop_tables")]
    # each decision is also counted, by rule, mode and action
    after = decision_counts(gw)
    for key in (("payments", "enforce", "strip"), ("payments-watch", "log_only", "strip")):
        assert after[key] - before.get(key, 0.0) == 2, key


def test_a_streamed_forbidden_call_is_held_back_and_stripped(gw):
    chunks, headers = stream(gw, "acme", **forced_transfer())
    assert not any("tool_calls" in ch.get("delta", {}) for c in chunks for ch in c["choices"])
    assert [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch.get("finish_reason")] == ["stop"]
    assert {d["what"] for d in chunks[-1]["infercloud"]["policy"]} == {
        "offered drop_tables", "call transfer: amount above max"}
    assert len(audit(gw, headers["x-request-id"])) == 2
    chunks, _ = stream(gw, "globex", **forced_transfer())
    sent = [d for c in chunks for ch in c["choices"] for d in ch.get("delta", {}).get("tool_calls") or []]
    assert json.loads("".join(d["function"].get("arguments") or "" for d in sent)) == {"amount": 500}


def test_a_card_number_split_across_stream_chunks_is_redacted_for_its_tenant_only(gw):
    plain, _ = stream(gw, "globex", messages=user("My card?"), response_format=CARD_REPLY)
    pieces = [ch["delta"].get("content") or "" for c in plain for ch in c["choices"]]
    assert CARD in "".join(pieces)
    assert not any(CARD in piece for piece in pieces)           # the model's tokens split the number up
    chunks, headers = stream(gw, "acme", messages=user("My card?"), response_format=CARD_REPLY)
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == '{"card": "[CARD]"}' or text.replace(" ", "") == '{"card":"[CARD]"}', text
    assert not any(d in text for d in ("4111", "1111"))
    assert chunks[-1]["infercloud"]["policy"] == [
        {"rule": "no-cards", "mode": "enforce", "action": "redact", "what": "output: card in choices[0]"}]
    assert [r["rule"] for r in audit(gw, headers["x-request-id"])] == ["no-cards"]
    whole = post(gw, "acme", messages=user("My card?"), response_format=CARD_REPLY)
    assert CARD not in whole.text and "[CARD]" in whole.json()["choices"][0]["message"]["content"]


def test_an_input_guard_of_one_key_refuses_that_key_only(gw):
    mail = user("Write to jane.doe@example.com about the invoice.")
    refused = post(gw, "ci", messages=mail, max_tokens=2)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "policy_violation"
    assert "no-mail-from-ci" in refused.json()["error"]["message"] and "jane" not in refused.text
    rows = audit(gw, refused.headers["x-request-id"])
    assert [(r["rule"], r["action"], r["what"]) for r in rows] == [
        ("no-mail-from-ci", "block", "input: email in messages[0].content")]
    assert post(gw, "acme", messages=mail, max_tokens=2).status_code == 200
    assert post(gw, "globex", messages=mail, max_tokens=2).status_code == 200


def test_conversation_limits_refuse_the_fourth_turn_of_a_chat_and_of_a_stored_conversation(gw):
    turns = []
    for i in range(4):
        turns += [{"role": "user", "content": f"Turn {i}."}, {"role": "assistant", "content": "Ok."}]
    assert post(gw, "acme", messages=turns[:5], max_tokens=2).status_code == 200
    refused = post(gw, "acme", messages=turns[:7], max_tokens=2)
    assert refused.status_code == 400 and "short-talks" in refused.json()["error"]["message"]
    assert post(gw, "globex", messages=turns[:7], max_tokens=2).status_code == 200

    previous = None
    for turn in range(3):
        body = {"input": f"Say {turn}.", "max_output_tokens": 16,
                **({"previous_response_id": previous} if previous else {})}
        answer = post(gw, "acme", "/v1/responses", **body)
        assert answer.status_code == 200, answer.text
        previous = answer.json()["id"]
    fourth = post(gw, "acme", "/v1/responses", input="Say 3.", max_output_tokens=16, previous_response_id=previous)
    assert fourth.status_code == 400 and fourth.json()["error"]["code"] == "policy_violation"
    assert "turns above 3" in fourth.json()["error"]["message"]


def test_a_rule_made_through_the_admin_api_applies_at_once_to_its_tenant_and_is_audited(gw):
    rule = {"name": "no-drops", "kind": "tools", "tenants": ["globex"], "allow": ["transfer"]}
    made = admin(gw, "POST", "/admin/policies", json=rule)
    assert made.status_code == 201, made.text
    assert admin(gw, "POST", "/admin/policies", json=rule).status_code == 409
    bad = admin(gw, "POST", "/admin/policies", json={**rule, "name": "x", "tenants": ["nobody"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tenants"
    assert admin(gw, "POST", "/admin/policies", json={**rule, "name": "y", "mode": "maybe"}).json()["error"]["param"] \
        == "mode"
    refused = post(gw, "globex", **forced_transfer(max_tokens=2))
    assert refused.status_code == 400 and "no-drops" in refused.json()["error"]["message"]
    assert post(gw, "acme", **forced_transfer(max_tokens=2)).status_code == 200
    names = {p["name"]: p["source"] for p in admin(gw, "GET", "/admin/policies").json()["data"]}
    assert names["no-drops"] == "api" and names["payments"] == "config"
    assert admin(gw, "DELETE", "/admin/policies/payments").status_code == 409
    assert admin(gw, "DELETE", "/admin/policies/no-drops").status_code == 200
    assert admin(gw, "GET", "/admin/policies/no-drops").status_code == 404
    assert post(gw, "globex", **forced_transfer(max_tokens=2)).status_code == 200
    changes = admin(gw, "GET", "/admin/audit", params={"kind": "admin"}).json()["data"]
    made_row = next(r for r in changes if r["action"] == "create_policy")
    assert made_row["after"]["name"] == "no-drops" and made_row["before"] is None
    assert next(r for r in changes if r["action"] == "delete_policy")["before"]["name"] == "no-drops"


def test_a_tenant_reads_its_own_policy_decisions_only(gw):
    post(gw, "acme", **forced_transfer(max_tokens=2))
    for key, own in (("acme", {"payments", "no-cards", "no-mail-from-ci", "short-talks"}),
                     ("globex", {"payments-watch", "no-drops"})):
        rows = httpx.get(f"{gw.url}/v1/audit", headers={"Authorization": f"Bearer {gw.keys[key]}"},
                         params={"limit": 1000}).json()["data"]
        assert rows and {r["rule"] for r in rows} <= own, key
