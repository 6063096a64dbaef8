"""The audit log: policy decisions and admin changes written in SQL and read back per tenant, newest first."""

from __future__ import annotations

import datetime as dt

from infercloud.policy.audit import AuditLog, AuditRow
from infercloud.store.database import open_database


def test_rows_are_written_and_each_tenant_reads_only_its_own(tmp_path):
    log = AuditLog(open_database(f"sqlite:///{tmp_path}/audit.db"))
    t0 = dt.datetime(2026, 12, 5, 12, 0)
    log.write([
        AuditRow("policy", "strip", "call transfer: amount above max", tenant_id=1, key_id=7, request_id="req-a",
                 rule="payments", mode="enforce", at=t0),
        AuditRow("policy", "redact", "card in output", tenant_id=2, request_id="req-b", rule="pii", mode="log_only",
                 at=t0 + dt.timedelta(seconds=1)),
        AuditRow("admin", "create", "tenant acme", key_id=1, before=None, after={"name": "acme", "tier": "standard"},
                 at=t0 + dt.timedelta(seconds=2)),
    ])
    log.write([])
    assert [r.what for r in log.query()] == ["tenant acme", "card in output", "call transfer: amount above max"]
    (mine,) = log.query(tenant_id=1)
    assert (mine.rule, mine.mode, mine.action, mine.request_id, mine.key_id) == ("payments", "enforce", "strip",
                                                                                "req-a", 7)
    assert [r.tenant_id for r in log.query(kind="policy")] == [2, 1]
    assert log.query(kind="admin")[0].after == {"name": "acme", "tier": "standard"}
    assert [r.rule for r in log.query(since=t0 + dt.timedelta(seconds=1), kind="policy")] == ["pii"]
    assert log.query(rule="nope") == [] and len(log.query(limit=1)) == 1
    long = AuditRow("policy", "refuse", "x" * 1000, tenant_id=3)
    log.write([long])
    assert len(log.query(tenant_id=3)[0].what) == 300
