"""The evaluation's report for operators (admin keys, or the internal token):

  GET /admin/evaluations?by=evaluator|model|day|target&target=&evaluator=&since=&until=
      {"object": "list", "by", "data": [{<by>, evaluator, count, mean_value, pass_rate}],
       "status": [{target, evaluator, scores, mean_value, degraded, degraded_since}], "degraded": {target: [...]}}

`data` comes from the scores in SQL (every gateway's; a sample is there once scored, off the request path);
`status` is this gateway's window of recent scores
per evaluator, which decides what is degraded. A 404 `evaluation_disabled` where no evaluation is
configured; a bad parameter is a 400 naming it.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request

from infercloud.evaluation.report import GROUPS, evaluation_report
from infercloud.gateway.admin import operator_principal, time_param
from infercloud.openai.asgi import no_query
from infercloud.openai.errors import APIError, bad_request


def install_evaluation_routes(app: FastAPI, gateway) -> None:
    @app.get("/admin/evaluations")
    async def report(request: Request):
        await operator_principal(gateway, request)
        if gateway.sampler is None:
            raise APIError(404, "No evaluation is configured on this gateway (no `evaluations` section).",
                           code="evaluation_disabled")
        q = request.query_params
        no_query(request, ("by", "target", "evaluator", "since", "until"))
        by = q.get("by", "evaluator")
        if by not in GROUPS:
            raise bad_request(f"by must be one of {', '.join(GROUPS)}.", param="by")
        evaluation = gateway.sampler.evaluation
        engine = await evaluation.engine()
        rows = await asyncio.to_thread(evaluation_report, engine, by, q.get("target"), time_param(q, "since"),
                                       time_param(q, "until"), q.get("evaluator"))
        return {"object": "list", "by": by, "data": rows, "status": evaluation.status(),
                "degraded": evaluation.degraded()}
