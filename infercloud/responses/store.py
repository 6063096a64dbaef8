"""ResponseStore: stored responses in SQL (the `responses` table of store/schema.py), each of one owner.

An owner is a tenant (`tenant:<id>`) or, without tenancy, `open`. Every read, delete and continuation
names the owner, and a row of another owner is treated exactly like a row that does not exist, so
one tenant can neither see nor probe another's responses. Rows live `ttl_s` seconds: past
`expires_at` a row is never returned; it is deleted when it is next looked up, and all expired rows
are deleted at most every `purge_interval_s` (on a new response). Times come from the injected clock
(naive UTC, as everywhere in the schema). The calls block: the service runs them in a thread.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from infercloud.store.database import utcnow
from infercloud.store.schema import responses

ID_PATTERN = re.compile(r"resp_[0-9a-f]{1,59}")   # what an id may look like; anything else is simply unknown


@dataclass(frozen=True)
class StoredResponse:
    id: str
    owner: str
    model: str
    created_at: dt.datetime
    expires_at: dt.datetime
    previous_response_id: str | None
    root_id: str               # the conversation's first response (the gateway's session key)
    request: dict
    input_items: list[dict]
    output: list[dict]
    messages: list[dict]       # the chat messages a continuation starts from
    usage: dict | None
    response: dict             # the Response object as it was returned


class ResponseStore:
    def __init__(self, engine: sa.Engine, ttl_s: float = 30 * 86400.0, purge_interval_s: float = 300.0,
                 now: Callable[[], dt.datetime] = utcnow):
        self.engine = engine
        self.ttl = dt.timedelta(seconds=ttl_s)
        self.purge_interval = dt.timedelta(seconds=purge_interval_s)
        self.now = now
        self._last_purge: dt.datetime | None = None

    def put(self, owner: str, response: dict, request: dict, input_items: list[dict], messages: list[dict],
            root_id: str) -> StoredResponse:
        """Store a response (its id is `response["id"]`), expiring `ttl_s` from now."""
        self.maybe_purge()
        now = self.now()
        row = StoredResponse(response["id"], owner, response["model"], now, now + self.ttl,
                             response.get("previous_response_id"), root_id, request, input_items,
                             response["output"], messages, response.get("usage"), response)
        with self.engine.begin() as conn:
            conn.execute(responses.insert().values(**row.__dict__))
        return row

    def get(self, response_id: str, owner: str) -> StoredResponse | None:
        """The owner's unexpired response by id; None for an unknown, expired or other owner's id."""
        if not isinstance(response_id, str) or not ID_PATTERN.fullmatch(response_id):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(responses).where(responses.c.id == response_id,
                                                          responses.c.owner == owner)).first()
        if row is None:
            return None
        if row.expires_at <= self.now():
            self._delete_expired(response_id)
            return None
        return StoredResponse(**row._mapping)

    def conversation(self, root_id: str, owner: str) -> tuple[int, int, int]:
        """The owner's stored conversation under `root_id` (every unexpired response continuing it): how many
        responses, function calls in their outputs, and tokens they used."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(responses.c.output, responses.c.usage).where(
                responses.c.root_id == root_id, responses.c.owner == owner, responses.c.expires_at > self.now())).all()
        calls = sum(1 for r in rows for item in r.output or [] if isinstance(item, dict)
                    and item.get("type") == "function_call")
        tokens = sum(int((r.usage or {}).get("total_tokens") or 0) for r in rows)
        return len(rows), calls, tokens

    def delete(self, response_id: str, owner: str) -> bool:
        """Delete the owner's unexpired response; False when there is none by that id."""
        if not isinstance(response_id, str) or not ID_PATTERN.fullmatch(response_id):
            return False
        with self.engine.begin() as conn:
            done = conn.execute(responses.delete().where(responses.c.id == response_id, responses.c.owner == owner,
                                                         responses.c.expires_at > self.now()))
        return done.rowcount > 0

    def purge_expired(self) -> int:
        """Delete every expired row; how many were deleted."""
        now = self.now()
        self._last_purge = now
        with self.engine.begin() as conn:
            return conn.execute(responses.delete().where(responses.c.expires_at <= now)).rowcount

    def maybe_purge(self) -> int:
        """purge_expired, when the last purge is `purge_interval_s` old (or none ran yet)."""
        if self._last_purge is not None and self.now() - self._last_purge < self.purge_interval:
            return 0
        return self.purge_expired()

    def _delete_expired(self, response_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(responses.delete().where(responses.c.id == response_id,
                                                  responses.c.expires_at <= self.now()))
