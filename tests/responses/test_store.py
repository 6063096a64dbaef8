"""ResponseStore: per-owner rows with expiry, on SQLite and PostgreSQL, with an injected clock."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from infercloud.responses.store import ResponseStore
from infercloud.store.schema import responses


class Clock:
    def __init__(self):
        self.now = dt.datetime(2026, 1, 1)

    def __call__(self) -> dt.datetime:
        return self.now


def put(store: ResponseStore, owner: str, response_id: str, previous: str | None = None):
    response = {"id": response_id, "object": "response", "model": "m", "previous_response_id": previous,
                "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                            "content": [{"type": "output_text", "text": "hi", "annotations": []}]}],
                "usage": {"input_tokens": 3}}
    items = [{"type": "message", "id": "msg_0", "role": "user", "content": [{"type": "input_text", "text": "x"}]}]
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "hi"}]
    return store.put(owner, response, {"model": "m", "input": "x"}, items, messages, previous or response_id)


def rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(responses)).scalar()


def test_a_response_is_its_owners_only(engine):
    store = ResponseStore(engine, ttl_s=60, now=Clock())
    put(store, "tenant:1", "resp_aa")
    got = store.get("resp_aa", "tenant:1")
    assert got.response["id"] == "resp_aa" and got.messages[-1] == {"role": "assistant", "content": "hi"}
    assert got.root_id == "resp_aa" and got.input_items[0]["id"] == "msg_0" and got.usage == {"input_tokens": 3}
    assert store.get("resp_aa", "tenant:2") is None          # another tenant: as if it did not exist
    assert not store.delete("resp_aa", "tenant:2")
    assert store.get("resp_aa", "tenant:1") is not None
    assert store.delete("resp_aa", "tenant:1")
    assert store.get("resp_aa", "tenant:1") is None and not store.delete("resp_aa", "tenant:1")


def test_ids_that_cannot_be_ours_are_unknown_without_a_query(engine):
    store = ResponseStore(engine, now=Clock())
    for bad in ("", "resp_", "resp_XYZ", "x" * 500, "resp_ab\x00", "resp_" + "a" * 60):
        assert store.get(bad, "open") is None and not store.delete(bad, "open")


def test_expired_responses_are_gone_and_deleted(engine):
    clock = Clock()
    store = ResponseStore(engine, ttl_s=10, purge_interval_s=100, now=clock)
    put(store, "open", "resp_01")
    put(store, "open", "resp_02", previous="resp_01")
    assert store.get("resp_02", "open").previous_response_id == "resp_01"
    assert store.get("resp_02", "open").root_id == "resp_01"
    clock.now += dt.timedelta(seconds=10)
    assert store.get("resp_01", "open") is None          # expired: not returned, and deleted as it is looked up
    assert rows(engine) == 1
    assert not store.delete("resp_02", "open")           # expired rows cannot be deleted either (they are gone)
    put(store, "open", "resp_03")                        # the purge ran 10 s ago: not yet again
    assert rows(engine) == 2
    clock.now += dt.timedelta(seconds=100)
    put(store, "open", "resp_04")                        # a new response purges every expired row
    assert rows(engine) == 1 and store.get("resp_04", "open") is not None


def test_the_responses_section_of_the_config(tmp_path):
    import pytest

    from infercloud.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("responses: {ttl_s: 60, database: 'sqlite:///x.db'}\n")
    assert (load_config(path).responses.ttl_s, load_config(path).responses.database) == (60, "sqlite:///x.db")
    assert load_config().responses.ttl_s == 30 * 86400
    for bad, message in (("{ttl_s: 0}", "ttl_s must be positive"), ("{ttl_s: -1}", "must not be negative"),
                         ("{keep: 1}", "responses.keep: unknown field")):
        path.write_text(f"responses: {bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)
