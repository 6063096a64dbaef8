"""Reports over the ledger: spend in a budget period, and usage grouped by model, day or tenant.

Per model the report also gives the operator's device cost per million output tokens (device-seconds
at the device's hourly price, over the output tokens they produced); `device_utilization` needs to
know how long replicas were up, which only a running gateway does (attributed device-seconds over
replica-seconds since it started).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from infercloud.store.schema import usage

GROUPS = ("model", "day", "tenant")


def parse_time(text: str | None) -> dt.datetime | None:
    """An ISO date or datetime (UTC if no zone given), or `Nd` / `Nh` ago; None stays None."""
    if text is None or text == "":
        return None
    text = text.strip()
    if text[:-1].isdigit() and text[-1] in "dh":
        amount = int(text[:-1])
        delta = dt.timedelta(days=amount) if text[-1] == "d" else dt.timedelta(hours=amount)
        return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - delta
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a date or time: {text!r} (use 2026-11-01, 2026-11-01T12:00 or 7d)") from exc
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def period_start(period: str, now: dt.datetime) -> dt.datetime | None:
    """Start of the budget period holding `now` (UTC): midnight, the 1st of the month, or None for total."""
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


def spent_usd(engine: sa.Engine, tenant_id: int, since: dt.datetime | None) -> float:
    query = sa.select(sa.func.coalesce(sa.func.sum(usage.c.cost_usd), 0.0)).where(usage.c.tenant_id == tenant_id)
    if since is not None:
        query = query.where(usage.c.ended_at >= since)
    with engine.connect() as conn:
        return float(conn.execute(query).scalar_one())


def usage_report(engine: sa.Engine, by: str = "model", tenant_id: int | None = None,
                 since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[dict]:
    """One dict per group: requests, tokens, device-seconds, billed and device cost (and per-model ratios)."""
    if by not in GROUPS:
        raise ValueError(f"by must be one of {', '.join(GROUPS)}, got {by!r}")
    key = {"model": usage.c.model, "day": sa.func.date(usage.c.ended_at), "tenant": usage.c.tenant_id}[by]
    query = sa.select(
        key.label("key"),
        sa.func.count(sa.distinct(usage.c.request_id)).label("requests"),
        sa.func.sum(usage.c.prompt_tokens).label("prompt_tokens"),
        sa.func.sum(usage.c.cached_tokens).label("cached_tokens"),
        sa.func.sum(usage.c.completion_tokens).label("completion_tokens"),
        sa.func.sum(usage.c.device_seconds).label("device_seconds"),
        sa.func.sum(usage.c.cost_usd).label("cost_usd"),
        sa.func.sum(usage.c.device_cost_usd).label("device_cost_usd"),
    ).group_by(key).order_by(key)
    if tenant_id is not None:
        query = query.where(usage.c.tenant_id == tenant_id)
    if since is not None:
        query = query.where(usage.c.ended_at >= since)
    if until is not None:
        query = query.where(usage.c.ended_at < until)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    report = []
    for row in rows:
        entry = {by: str(row.key), "requests": row.requests, "prompt_tokens": int(row.prompt_tokens),
                 "cached_tokens": int(row.cached_tokens), "completion_tokens": int(row.completion_tokens),
                 "device_seconds": float(row.device_seconds), "cost_usd": float(row.cost_usd),
                 "device_cost_usd": float(row.device_cost_usd)}
        if by == "model":
            output = entry["completion_tokens"]
            entry["device_cost_per_mtok_output"] = entry["device_cost_usd"] / output * 1e6 if output else None
        report.append(entry)
    return report


def device_utilization(engine: sa.Engine, since: dt.datetime, replica_seconds: dict[str, float]) -> dict[str, float]:
    """Per model: device-seconds attributed to requests that ended since `since`, over the replica-seconds
    its replicas were up in that time (the caller's count, e.g. the gateway's since it started)."""
    query = (sa.select(usage.c.model, sa.func.sum(usage.c.device_seconds))
             .where(usage.c.ended_at >= since).group_by(usage.c.model))
    with engine.connect() as conn:
        busy = {model: float(seconds) for model, seconds in conn.execute(query)}
    return {model: min(busy.get(model, 0.0) / up, 1.0) for model, up in replica_seconds.items() if up > 0}
