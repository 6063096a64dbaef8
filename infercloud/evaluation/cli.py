"""`infercloud eval report`: evaluation scores from SQL, grouped by model, evaluator, day or target.

It opens the database a config names (`--config`, its tenancy.database: where a gateway writes its
scores), or `--database URL`, or the default SQLite file, so it works with or without a running gateway.
The SQL side is imported by the command as it runs, not by the parser (`infercloud --help` stays quick).
"""

from __future__ import annotations

import argparse
import json

from infercloud.tables import format_table

# What `--by` offers, owned by infercloud/evaluation/report.py (GROUPS; tests/test_cli_startup.py checks they agree).
REPORT_GROUPS = ("model", "evaluator", "day", "target")


def add_evaluation_parsers(commands: argparse._SubParsersAction) -> None:
    evaluation = commands.add_parser("eval", help="continuous evaluation: scores of sampled answers",
                                     description="Read the scores of sampled live answers.")
    actions = evaluation.add_subparsers(dest="eval_command", required=True, metavar="ACTION")
    report = actions.add_parser("report", help="count, mean score and pass rate per group",
                                description="Sum the evaluation scores by model, evaluator, day or target "
                                "(each group split by evaluator).")
    report.add_argument("--config", default=None, help="config whose tenancy.database to use")
    report.add_argument("--database", default=None, help="SQLAlchemy URL (default: the SQLite file)")
    report.add_argument("--by", choices=REPORT_GROUPS, default="evaluator", help="group by (default evaluator)")
    report.add_argument("--target", default=None, help="one target's scores only (a model or pipeline name)")
    report.add_argument("--evaluator", default=None, help="one evaluator's scores only")
    report.add_argument("--since", default=None, help="ISO date or time (UTC), or 7d / 12h ago")
    report.add_argument("--until", default=None, help="ISO date or time (UTC), or 7d / 12h ago; scores before it")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.set_defaults(run=run_eval_report)


def _database_url(args: argparse.Namespace) -> str | None:
    if args.database is None and args.config is not None:   # the config module is imported only then
        from infercloud.config import load_config

        tenancy = load_config(args.config).tenancy
        return tenancy.database if tenancy else None
    return args.database


def run_eval_report(args: argparse.Namespace) -> int:
    from infercloud.evaluation.report import evaluation_report
    from infercloud.metering.reports import parse_time
    from infercloud.store.database import open_database

    rows = evaluation_report(open_database(_database_url(args)), args.by, args.target, parse_time(args.since),
                             parse_time(args.until), args.evaluator)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = [args.by.upper()] + ([] if args.by == "evaluator" else ["EVALUATOR"]) + ["COUNT", "MEAN", "PASS_RATE",
                                                                                    "JUDGE_TOKENS", "JUDGE_DEVICE_S"]
    table = [[r[args.by]] + ([] if args.by == "evaluator" else [r["evaluator"]])
             + [str(r["count"]), f"{r['mean_value']:.3f}", f"{r['pass_rate']:.1%}",
                str(r["judge_tokens"]) if r["judge_tokens"] else "-",
                f"{r['judge_device_seconds']:.3f}" if r["judge_device_seconds"] else "-"] for r in rows]
    print(format_table(header, table))
    return 0
