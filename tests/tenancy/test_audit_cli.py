"""`infercloud audit` on a real SQLite file, and the CLI's own tenant and key changes in the audit log."""

from __future__ import annotations

import argparse
import datetime as dt
import json

import pytest
import sqlalchemy as sa

from infercloud.cli import build_parser, main
from infercloud.policy.audit import AuditLog, AuditRow
from infercloud.store.database import open_database
from infercloud.store.schema import audit
from infercloud.tenancy.store import hash_key

T0 = dt.datetime(2026, 12, 5, 12, 0)


@pytest.fixture
def db(tmp_path) -> list[str]:
    return ["--database", f"sqlite:///{tmp_path}/t.db"]


def audit_json(db: list[str], capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["audit", *args, "--json", *db]) == 0
    return json.loads(capsys.readouterr().out)


def test_tenant_and_key_changes_made_here_are_audited_without_secrets(db, capsys):
    assert main(["tenants", "create", "acme", "--tier", "batch", *db]) == 0
    tenant = json.loads(capsys.readouterr().out)
    assert main(["keys", "create", "--tenant", "acme", "--name", "ci", "--admin", *db]) == 0
    secret = capsys.readouterr().out.strip()
    prefix = secret[:len("sk-ic-") + 8]
    assert main(["keys", "revoke", prefix, *db]) == 0

    revoke, create_key, create_tenant = audit_json(db, capsys, "--kind", "admin")
    assert {(r["kind"], r["key_id"], r["tenant"], r["tenant_id"]) for r in (revoke, create_key, create_tenant)} == \
        {("admin", None, "acme", tenant["id"])}
    assert create_tenant["action"] == "create_tenant" and create_tenant["what"] == "cli: create tenant acme (tier batch)"
    assert create_tenant["before"] is None and create_tenant["after"] == tenant
    assert create_key["action"] == "create_key" and create_key["what"] == f"cli: create admin key {prefix} for tenant acme"
    assert create_key["after"]["prefix"] == prefix and create_key["after"]["revoked_at"] is None
    assert revoke["action"] == "revoke_key" and revoke["before"]["revoked_at"] is None
    assert revoke["after"]["revoked_at"] is not None
    with open_database(db[1]).connect() as conn:
        stored = json.dumps([dict(r._mapping) for r in conn.execute(sa.select(audit))], default=str)
    assert secret not in stored and secret[len(prefix):] not in stored and hash_key(secret) not in stored


def test_a_refused_change_is_not_audited(db, capsys):
    assert main(["tenants", "create", "acme", *db]) == 0
    assert main(["tenants", "create", "acme", *db]) == 1
    assert main(["keys", "revoke", "sk-ic-zzzzzzzz", *db]) == 1
    assert [r["action"] for r in audit_json(db, capsys)] == ["create_tenant"]


def test_audit_filters_and_prints_a_table(db, capsys):
    assert main(["tenants", "create", "acme", *db]) == 0 and main(["tenants", "create", "beta", *db]) == 0
    ids = {name: i for i, name in enumerate(["acme", "beta"], start=1)}
    AuditLog(open_database(db[1])).write([
        AuditRow("policy", "redact", "card number in output", tenant_id=ids["acme"], key_id=3, request_id="req-a",
                 rule="pii", mode="enforce", at=T0),
        AuditRow("policy", "strip", "call transfer: amount above max", tenant_id=ids["beta"], request_id="req-b",
                 rule="payments", mode="log_only", at=T0 + dt.timedelta(seconds=1)),
    ])
    capsys.readouterr()
    assert main(["audit", "--kind", "policy", *db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["AT", "KIND", "TENANT", "KEY", "RULE", "MODE", "ACTION", "REQUEST", "WHAT"]
    assert lines[1].split()[:8] == ["2026-12-05T12:00:01Z", "policy", "beta", "-", "payments", "log_only", "strip",
                                   "req-b"]
    assert lines[2].split()[:8] == ["2026-12-05T12:00:00Z", "policy", "acme", "3", "pii", "enforce", "redact",
                                   "req-a"] and lines[2].endswith("card number in output")
    assert len(lines) == 3

    def whats(*args: str) -> list[str]:
        return [r["what"] for r in audit_json(db, capsys, "--kind", "policy", *args)]

    assert whats("--tenant", "acme") == ["card number in output"]
    assert whats("--rule", "payments") == ["call transfer: amount above max"]
    assert whats("--request-id", "req-a") == ["card number in output"]
    assert whats("--since", "2026-12-05T12:00:01") == ["call transfer: amount above max"]
    assert whats("--until", "2026-12-05T12:00:01") == ["card number in output"]
    assert whats("--limit", "1") == ["call transfer: amount above max"]
    assert len(audit_json(db, capsys)) == 4   # and the two tenants made


@pytest.mark.parametrize("args, message", [
    (["--limit", "0"], "--limit must be 1 to 1000"),
    (["--limit", "1001"], "--limit must be 1 to 1000"),
    (["--since", "garbage"], "--since: not a date or time"),
    (["--until", "99999999999d"], "--until: not a date or time"),
    (["--tenant", "nobody"], "no tenant 'nobody'"),
])
def test_bad_audit_options_are_refused_naming_them(db, capsys, args, message):
    assert main(["audit", *args, *db]) == 1
    assert message in capsys.readouterr().err


def test_every_audit_option_has_help():
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = [a for a in commands.choices["audit"]._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in options} == {"config", "database", "tenant", "kind", "rule", "request_id", "since",
                                         "until", "limit", "json"}
    assert [a.dest for a in options if not a.help] == []
