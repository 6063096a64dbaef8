"""Tool rules: offered functions and reply calls against an allow-list and argument conditions, by mode."""

from __future__ import annotations

import pytest

from infercloud.policy.tools import ToolRule, check_calls, check_offered, enforced, strip_calls

PAYMENTS = ToolRule("payments", allow=("get_balance", "transfer"),
                    conditions={"transfer": {"amount": {"max": 100, "min": 0.01, "required": True},
                                             "currency": {"in": ["EUR", "USD"]}}})


def test_offered_functions_outside_the_allow_list_are_decisions():
    decisions = check_offered(PAYMENTS, ["get_balance", "delete_account", "transfer"])
    assert [(d.what, d.index, d.action, d.mode) for d in decisions] == [("offered delete_account", 1, "refuse",
                                                                        "enforce")]


@pytest.mark.parametrize("call, what", [
    (("transfer", '{"amount": 50, "currency": "EUR"}'), None),
    (("transfer", '{"amount": 500, "currency": "EUR"}'), "call transfer: amount above max"),
    (("transfer", '{"amount": 0, "currency": "EUR"}'), "call transfer: amount below min"),
    (("transfer", '{"amount": "50", "currency": "EUR"}'), "call transfer: amount is not a number"),
    (("transfer", '{"amount": 50, "currency": "GBP"}'), "call transfer: currency not among the allowed values"),
    (("transfer", '{"currency": "EUR"}'), "call transfer: amount missing"),
    (("transfer", "not json"), "call transfer: arguments are not a JSON object"),
    (("get_balance", "{}"), None),
    (("delete_account", "{}"), "call delete_account: not allowed"),
])
def test_reply_calls_are_held_to_the_allow_list_and_conditions(call, what):
    decisions = check_calls(PAYMENTS, [call])
    assert [d.what for d in decisions] == ([what] if what else [])
    assert "500" not in "".join(d.what for d in decisions)   # what matched, never the argument's value


def test_strip_removes_only_enforced_offending_calls_and_log_only_changes_nothing():
    calls = [("get_balance", "{}"), ("transfer", '{"amount": 900, "currency": "EUR"}')]
    strip = ToolRule("strip", allow=PAYMENTS.allow, conditions=PAYMENTS.conditions, action="strip")
    assert strip_calls(calls, check_calls(strip, calls)) == calls[:1]
    logged = ToolRule("watch", allow=PAYMENTS.allow, conditions=PAYMENTS.conditions, action="strip", mode="log_only")
    decisions = check_calls(logged, calls)
    assert len(decisions) == 1 and enforced(decisions) == [] and strip_calls(calls, decisions) == calls


def test_a_rule_checks_its_own_conditions():
    with pytest.raises(ValueError, match="does not name"):
        ToolRule("r", allow=("a",), conditions={"b": {"x": {"max": 1}}})
    with pytest.raises(ValueError, match="unknown test 'maximum'"):
        ToolRule("r", allow=("a",), conditions={"a": {"x": {"maximum": 1}}})
