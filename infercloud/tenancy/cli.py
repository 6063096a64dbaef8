"""`infercloud tenants|keys|usage|audit`: manage tenants and API keys, read the ledger and the audit log,
straight from SQL.

Each command opens the database a config names (`--config`, its tenancy.database), or `--database URL`,
or the default SQLite file, so it works with or without a running gateway. A key is printed once. Every
change made here is in the audit log (key id none, what prefixed `cli:`).

The parsers are built from light modules only; the SQL side (SQLAlchemy, the stores, the reports) is imported
by the command that runs, so `infercloud --help` and the commands that open no database do not load it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING

from infercloud.config import BUDGET_PERIODS, SALT_PREFIX_CACHE_REMOVED, TIERS, TenantSpec
from infercloud.tables import format_table

if TYPE_CHECKING:
    from infercloud.tenancy.store import Tenant, TenantStore

# What the parsers offer, owned by modules that import SQLAlchemy; tests/test_cli_startup.py checks they agree.
USAGE_GROUPS = ("model", "day", "tenant")     # infercloud/metering/reports.py GROUPS
AUDIT_KINDS = ("policy", "admin")             # infercloud/policy/audit.py KINDS
AUDIT_MAX_ROWS = 1000                         # infercloud/policy/audit.py MAX_QUERY_LIMIT


def add_tenancy_parsers(commands: argparse._SubParsersAction) -> None:
    tenants = commands.add_parser("tenants", help="create, list and show tenants",
                                  description="Manage tenants in the tenancy database.")
    actions = tenants.add_subparsers(dest="tenants_command", required=True, metavar="ACTION")
    create = _database_options(actions.add_parser("create", help="create a tenant"))
    create.add_argument("name", help="the tenant's name (letters, digits, '.', '_', '-')")
    create.add_argument("--tier", choices=TIERS, default=TenantSpec.tier,
                        help=f"highest tier (default {TenantSpec.tier})")
    create.add_argument("--models", default=None, help="comma-separated models it may call (default: all)")
    create.add_argument("--rpm", type=int, default=None, help="requests per minute")
    create.add_argument("--tpm", type=int, default=None, help="tokens per minute (prompt + max_tokens)")
    create.add_argument("--max-concurrent", type=int, default=None, help="requests in flight at once")
    create.add_argument("--max-tokens", type=int, default=None, help="cap on max_tokens per request")
    create.add_argument("--budget", type=float, default=None, help="USD per budget period")
    create.add_argument("--budget-period", choices=BUDGET_PERIODS, default=TenantSpec.budget_period,
                        help=f"calendar period (UTC) of --budget (default {TenantSpec.budget_period})")
    create.add_argument("--cache-group", default=None,
                        help="share cached prompt blocks with the tenants of this group (default: none; "
                             "every tenant's prefix cache is its own)")
    create.add_argument("--salt-prefix-cache", action="store_true", help=argparse.SUPPRESS)  # gone: refused
    create.add_argument("--home-region", default=None, help="the region its requests are served in first")
    create.add_argument("--regions", default=None,
                        help="comma-separated regions its requests may be served in (data residency)")
    create.set_defaults(run=run_tenants_create)
    listing = _database_options(actions.add_parser("list", help="list tenants"))
    listing.set_defaults(run=run_tenants_list)
    show = _database_options(actions.add_parser("show", help="show a tenant and its keys"))
    show.add_argument("name", help="the tenant's name")
    show.set_defaults(run=run_tenants_show)

    keys = commands.add_parser("keys", help="create, list and revoke API keys",
                               description="Manage API keys. A new key is printed once; only its hash is kept.")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = _database_options(actions.add_parser("create", help="create a key for a tenant (printed once)"))
    create.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    create.add_argument("--name", default=None, help="a label for the key")
    create.add_argument("--admin", action="store_true", help="may call /admin")
    create.add_argument("--expires-in-days", type=float, default=None, help="the key expires then (default: never)")
    create.set_defaults(run=run_keys_create)
    listing = _database_options(actions.add_parser("list", help="list keys (prefixes only)"))
    listing.add_argument("--tenant", default=None, help="only this tenant's keys")
    listing.set_defaults(run=run_keys_list)
    revoke = _database_options(actions.add_parser("revoke", help="revoke a key by its prefix (sk-ic-xxxxxxxx) or id"))
    revoke.add_argument("key", help="the key's prefix (sk-ic-xxxxxxxx) or id")
    revoke.set_defaults(run=run_keys_revoke)

    usage = _database_options(commands.add_parser("usage", help="usage and cost from the ledger",
                                                  description="Sum the usage ledger by model, day or tenant."))
    usage.add_argument("--tenant", default=None, help="only this tenant's usage")
    usage.add_argument("--since", default=None, help="ISO date or time (UTC), or 7d / 12h ago")
    usage.add_argument("--until", default=None, help="ISO date or time (UTC), or 7d / 12h ago; usage before it")
    usage.add_argument("--by", choices=USAGE_GROUPS, default="model", help="group by (default model)")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    usage.set_defaults(run=run_usage)

    audit = _database_options(commands.add_parser(
        "audit", help="policy decisions and admin changes from the audit log",
        description="Read the audit log, newest first: every policy decision (rule, mode, action, tenant, key, "
                    "request, what matched) and every admin change (who, what, before and after)."))
    audit.add_argument("--tenant", default=None, help="only this tenant's rows (its decisions, changes to it)")
    audit.add_argument("--kind", choices=AUDIT_KINDS, default=None, help="only policy decisions or only admin changes")
    audit.add_argument("--rule", default=None, help="only the decisions of this policy rule")
    audit.add_argument("--request-id", default=None, help="only the decisions on this request (its X-Request-Id)")
    audit.add_argument("--since", default=None, help="ISO date or time (UTC), or 7d / 12h ago")
    audit.add_argument("--until", default=None, help="ISO date or time (UTC), or 7d / 12h ago; rows before it")
    audit.add_argument("--limit", type=int, default=100, help=f"at most this many rows, 1 to {AUDIT_MAX_ROWS} "
                                                              "(default 100)")
    audit.add_argument("--json", action="store_true", help="print JSON instead of a table")
    audit.set_defaults(run=run_audit)



def _database_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", default=None, help="config whose tenancy.database to use")
    parser.add_argument("--database", default=None, help="SQLAlchemy URL (default: the SQLite file)")
    return parser


def _store(args: argparse.Namespace) -> TenantStore:
    from infercloud.config import load_config
    from infercloud.store.database import open_database
    from infercloud.tenancy.store import TenantStore

    url = args.database
    if url is None and args.config is not None:
        tenancy = load_config(args.config).tenancy
        url = tenancy.database if tenancy else None
    return TenantStore(open_database(url))


def run_tenants_create(args: argparse.Namespace) -> int:
    from infercloud.tenancy.store import TenancyError

    if args.salt_prefix_cache:
        raise TenancyError(f"--salt-prefix-cache: {SALT_PREFIX_CACHE_REMOVED} (--cache-group NAME)")
    spec = TenantSpec(args.name, args.tier, _names(args.models), args.rpm, args.tpm, args.max_concurrent,
                      args.max_tokens, args.budget, args.budget_period, cache_group=args.cache_group,
                      home_region=args.home_region, regions=_names(args.regions))
    store = _store(args)
    tenant = store.create_tenant(spec)
    _audit(store, "create_tenant", f"create tenant {tenant.name} (tier {spec.tier})", tenant.id,
           after=tenant.describe())
    print(json.dumps(tenant.describe(), indent=2))
    return 0


def _names(text: str | None) -> tuple[str, ...] | None:
    """`a, b` -> ("a", "b"); None or empty -> None."""
    names = tuple(n.strip() for n in text.split(",") if n.strip()) if text else ()
    return names or None


def run_tenants_list(args: argparse.Namespace) -> int:
    rows = [_tenant_row(t) for t in _store(args).list_tenants()]
    print(format_table(["ID", "NAME", "TIER", "MODELS", "RPM", "TPM", "CONCURRENT", "BUDGET"], rows))
    return 0


def run_tenants_show(args: argparse.Namespace) -> int:
    store = _store(args)
    tenant = store.tenant(args.name)
    print(json.dumps({**tenant.describe(), "keys": [k.describe() for k in store.list_keys(tenant.id)]}, indent=2))
    return 0


def run_keys_create(args: argparse.Namespace) -> int:
    from infercloud.store.database import utcnow
    from infercloud.tenancy.store import key_expiry

    expires = key_expiry(args.expires_in_days, utcnow())
    store = _store(args)
    key, record = store.create_key(args.tenant, args.name, args.admin, expires)
    _audit(store, "create_key", f"create {record.label()} for tenant {args.tenant}", record.tenant_id,
           after=record.describe())
    print(key)
    print(f"(shown once; stored as a hash. prefix {record.describe()['prefix']}"
          f"{', admin' if record.is_admin else ''}{', expires ' + record.describe()['expires_at'] if expires else ''})",
          file=sys.stderr)
    return 0


def run_keys_list(args: argparse.Namespace) -> int:
    store = _store(args)
    names = {t.id: t.name for t in store.list_tenants()}
    rows = [[str(k.id), names.get(k.tenant_id, "?"), k.describe()["prefix"], k.name or "-",
             "yes" if k.is_admin else "no", "revoked" if k.revoked_at else "expires " + k.describe()["expires_at"]
             if k.expires_at else "active"] for k in store.list_keys(args.tenant)]
    print(format_table(["ID", "TENANT", "PREFIX", "NAME", "ADMIN", "STATE"], rows))
    return 0


def run_keys_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    before = store.find_key(args.key)
    record = store.revoke_key(args.key)
    _audit(store, "revoke_key", f"revoke {record.label()}", record.tenant_id,
           before=before.describe() if before is not None else None, after=record.describe())
    print(f"revoked {record.describe()['prefix']} at {record.describe()['revoked_at']}")
    return 0


def run_usage(args: argparse.Namespace) -> int:
    from infercloud.metering.reports import parse_time, usage_report

    store = _store(args)
    tenant_id = store.tenant(args.tenant).id if args.tenant else None
    rows = usage_report(store.engine, args.by, tenant_id, parse_time(args.since), parse_time(args.until))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    names = {t.id: t.name for t in store.list_tenants()} if args.by == "tenant" else {}
    header = [args.by.upper(), "REQUESTS", "PROMPT", "CACHED", "COMPLETION", "DEVICE_S", "COST_USD", "DEVICE_USD"]
    if args.by == "model":
        header.append("DEVICE_USD/M_OUT")
    table = []
    for r in rows:
        key = names.get(int(r["tenant"]), r["tenant"]) if args.by == "tenant" else r[args.by]
        line = [key, str(r["requests"]), str(r["prompt_tokens"]), str(r["cached_tokens"]),
                str(r["completion_tokens"]), f"{r['device_seconds']:.3f}", f"{r['cost_usd']:.6f}",
                f"{r['device_cost_usd']:.6f}"]
        if args.by == "model":
            per_m = r["device_cost_per_mtok_output"]
            line.append(f"{per_m:.4f}" if per_m is not None else "-")
        table.append(line)
    print(format_table(header, table))
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from infercloud.policy.audit import MAX_QUERY_LIMIT, AuditLog

    if not 1 <= args.limit <= MAX_QUERY_LIMIT:
        raise ValueError(f"--limit must be 1 to {MAX_QUERY_LIMIT}, got {args.limit}")
    store = _store(args)
    tenant_id = store.tenant(args.tenant).id if args.tenant else None
    rows = AuditLog(store.engine).query(tenant_id, args.kind, args.rule, _time(args.since, "--since"),
                                        _time(args.until, "--until"), args.limit, args.request_id)
    names = {t.id: t.name for t in store.list_tenants()}
    if args.json:
        print(json.dumps([row.describe(names.get(row.tenant_id)) for row in rows], indent=2))
        return 0
    table = [[row.describe()["at"], row.kind, names.get(row.tenant_id) or _or_dash(row.tenant_id),
              _or_dash(row.key_id), row.rule or "-", row.mode or "-", row.action,
              row.request_id or "-", row.what] for row in rows]
    print(format_table(["AT", "KIND", "TENANT", "KEY", "RULE", "MODE", "ACTION", "REQUEST", "WHAT"], table))
    return 0


def _or_dash(value: object) -> str:
    return str(value) if value is not None else "-"


def _time(text: str | None, option: str) -> dt.datetime | None:
    """A --since/--until value (see parse_time); a ValueError naming the option when it is no time."""
    from infercloud.metering.reports import parse_time

    try:
        return parse_time(text)
    except (ValueError, OverflowError) as exc:   # OverflowError: so many days ago that no date is
        raise ValueError(f"{option}: not a date or time (use 2026-11-01, 2026-11-01T12:00 or 7d)") from exc


def _audit(store: TenantStore, action: str, what: str, tenant_id: int, before: dict | None = None,
           after: dict | None = None) -> None:
    """A change made here, in the audit log: no key made it (key id none), its line says `cli:`."""
    from infercloud.policy.audit import AuditLog, admin_change

    AuditLog(store.engine).write([admin_change(None, action, f"cli: {what}", tenant_id, before, after)])


def _tenant_row(t: Tenant) -> list[str]:
    s = t.spec
    budget = f"${s.budget_usd}/{s.budget_period}" if s.budget_usd is not None else "-"
    return [str(t.id), t.name, s.tier, ",".join(s.models) if s.models else "all", str(s.requests_per_minute or "-"),
            str(s.tokens_per_minute or "-"), str(s.max_concurrent or "-"), budget]
