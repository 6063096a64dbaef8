"""The gateway's policy hook on the request path (policy/ holds the rules; this file applies them).

  screen    after the request's facts are parsed, before it is planned or admitted: the RuleSet of the
            tenant's key (PolicyBook) screens the body. A refusal (an enforced refuse or block) is a 400
            `policy_violation` naming the rule, and costs the tenant nothing; otherwise the body sent on is
            the screened one (redacted texts, stripped tools). No rules: nothing else happens.
  guard     the answer (a replica's, or a cache hit) on its way out: a JSON reply is screened whole (a
            refusal becomes the 400); a stream goes through a StreamGuard chunk by chunk, and a refusal ends
            it with an error event. Decisions about the request and the reply are listed in the answer's
            `infercloud.policy` (a JSON body's field; a stream's last chunk before [DONE]), and the
            enforced ones are named in the X-Infercloud-Policy header where known before the answer starts.
  audit     every decision, enforced or log_only, is one audit row (rule, mode, action, tenant, key,
            request id, what matched), written in the background (policy/audit.AuditWriter), and one count
            of `infercloud_policy_decisions_total{rule,mode,action}`.
Conversation limits of a stored Responses conversation are checked by `conversation`, which the Responses
API calls before continuing one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi.responses import Response, StreamingResponse

from infercloud.gateway.facts import RequestFacts
from infercloud.openai.errors import APIError
from infercloud.openai.sse import sse_done, sse_event
from infercloud.policy.audit import AuditRow, AuditWriter
from infercloud.policy.book import PolicyBook
from infercloud.policy.conversation import Conversation
from infercloud.policy.decision import Decision, first_refusal
from infercloud.policy.rules import RuleSet
from infercloud.policy.stream import StreamGuard
from infercloud.tenancy.admission import Principal

log = logging.getLogger("infercloud.gateway")

POLICY_HEADER = "X-Infercloud-Policy"


def policy_violation(decision: Decision, request_id: str | None = None) -> APIError:
    return APIError(400, f"Refused by policy rule '{decision.rule}': {decision.what}.", code="policy_violation",
                    headers={"X-Request-Id": request_id} if request_id else None)


@dataclass
class Watch:
    """One request's rules and what they decided so far, for its answer."""
    rules: RuleSet
    principal: Principal
    request_id: str
    decisions: list[Decision] = field(default_factory=list)


class Governance:
    def __init__(self, book: PolicyBook, audit: AuditWriter,
                 count: Callable[[str, str, str], None] | None = None):
        self.book = book
        self.audit = audit
        self.count = count     # (rule, mode, action): the gateway's metrics

    async def screen(self, principal: Principal, facts: RequestFacts,
                     request_id: str) -> tuple[RequestFacts, Watch | None]:
        rules = await self.book.rules_for(principal)
        if rules.empty:
            return facts, None
        screened = rules.screen_request(facts.body)
        self._record(principal, request_id, screened.decisions)
        if screened.refusal is not None:
            raise policy_violation(screened.refusal, request_id)
        if screened.body is not facts.body:
            facts = dataclasses.replace(facts, body=screened.body)
        if not screened.decisions and not (rules.watches_replies and facts.is_generation):
            return facts, None
        return facts, Watch(rules if facts.is_generation else RuleSet(), principal, request_id,
                            list(screened.decisions))

    async def conversation(self, principal: Principal, conversation: Conversation, request_id: str) -> None:
        """A Responses API continuation: refused (400) past its conversation limits."""
        rules = await self.book.rules_for(principal)
        if not rules.conversations:
            return
        decisions = RuleSet(conversations=rules.conversations).screen_request({}, conversation).decisions
        self._record(principal, request_id, decisions)
        refusal = first_refusal(decisions)
        if refusal is not None:
            raise policy_violation(refusal, request_id)

    def guard(self, response: Response, watch: Watch) -> Response:
        enforced = [f"{d.rule}={d.action}" for d in watch.decisions if d.enforced]
        if enforced:
            response.headers[POLICY_HEADER] = ", ".join(enforced)
        if response.status_code != 200:
            return response
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._guarded(watch, response.body_iterator)
            return response
        try:
            answer = json.loads(bytes(response.body))
        except ValueError:
            return response
        if not isinstance(answer, dict):
            return response
        screened = watch.rules.screen_reply(answer)
        self._record(watch.principal, watch.request_id, screened.decisions)
        if screened.refusal is not None:
            return policy_violation(screened.refusal, watch.request_id).response()
        decisions = watch.decisions + screened.decisions
        if not decisions:
            return response
        body = screened.body if screened.body is not answer else dict(answer)
        body["infercloud"] = {**(body.get("infercloud") or {}), "policy": [d.describe() for d in decisions]}
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(json.dumps(body), status_code=200, media_type="application/json", headers=headers)

    async def _guarded(self, watch: Watch, events: AsyncIterator) -> AsyncIterator[str]:
        """The stream's events through the StreamGuard; a refusal ends it with an error event."""
        guard = StreamGuard(watch.rules)
        buffer, head = "", {}
        try:
            async for event in events:
                buffer += event.decode() if isinstance(event, (bytes, bytearray, memoryview)) else event
                *blocks, buffer = buffer.split("\n\n")
                for block in blocks:
                    data = block.removeprefix("data:").strip() if block.startswith("data:") else None
                    if data == "[DONE]":
                        decisions = watch.decisions + guard.decisions
                        if decisions:
                            yield sse_event({**head, "choices": [],
                                             "infercloud": {"policy": [d.describe() for d in decisions]}})
                        yield sse_done()
                        continue
                    try:
                        chunk = json.loads(data) if data is not None else None
                    except ValueError:
                        chunk = None
                    if not isinstance(chunk, dict):
                        yield block + "\n\n"
                        continue
                    head = head or {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}
                    for out in guard.feed(chunk):
                        yield sse_event(out)
                    if guard.refusal is not None:
                        yield sse_event(policy_violation(guard.refusal).body())
                        return
            if buffer.strip():
                yield buffer
        finally:
            self._record(watch.principal, watch.request_id, guard.decisions)

    def _record(self, principal: Principal, request_id: str, decisions: list[Decision]) -> None:
        if not decisions:
            return
        if self.count is not None:
            for d in decisions:
                self.count(d.rule, d.mode, d.action)
        self.audit.record([AuditRow("policy", d.action, d.what, principal.tenant.id, principal.key.id,
                                    request_id, d.rule, d.mode) for d in decisions])
