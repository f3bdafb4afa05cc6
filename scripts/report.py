"""`make report`: the cost report of the running local stack (`make dev`), printed as a table
and written as JSON, CSV and HTML to .local/reports/ and to the local report bucket.

    python -m scripts.report                                 # the last 24 hours
    python -m scripts.report --start 2024-05-01 --end 2024-05-07
    python -m scripts.report --no-upload --out /tmp/reports

By default it reads the local stack (moto on 127.0.0.1:4566, or AWS_ENDPOINT_URL); pass the
names of a deployed stack's resources with --rollups-table/--bucket to report on it instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from llm_proxy.errors import DomainError
from llm_proxy.reports.period import last_hours, parse_period
from llm_proxy.reports.publish import publish, renderings
from llm_proxy.reports.render import to_text
from llm_proxy.reports.report import report_for
from llm_proxy.settings import CostReportSettings

from devstack.aws import REPO_ROOT, function_environment, load_template

LOCAL_ENDPOINT = "http://127.0.0.1:4566"
# What `make dev` names the template's resources (devstack.aws's naming).
LOCAL_RESOURCES = {
    "RollupsTable": "llm-proxy-rollups",
    "ReportBucket": "llm-proxy-report",
    "ReportTopic": "arn:aws:sns:us-east-1:123456789012:llm-proxy-report",
}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.report", description=__doc__)
    parser.add_argument("--start", help="first UTC day (YYYY-MM-DD); default: 24 hours ago")
    parser.add_argument("--end", help="last UTC day, included; default: today")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".local" / "reports")
    parser.add_argument("--rollups-table", help="default: the local stack's")
    parser.add_argument("--bucket", help="default: the local stack's report bucket")
    parser.add_argument("--keys-table", help="virtual keys with budgets, for the flags")
    parser.add_argument("--budget-share", type=float, default=0.8)
    parser.add_argument("--no-upload", action="store_true", help="write local files only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if not args.rollups_table:
        # The local stack: moto's endpoint and dummy credentials, never real ones.
        os.environ.setdefault("AWS_ENDPOINT_URL", LOCAL_ENDPOINT)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    local = function_environment(load_template(), LOCAL_RESOURCES, "CostReportFunction")
    bucket = None if args.no_upload else (args.bucket or local["LLM_PROXY__REPORT_BUCKET"])
    settings = CostReportSettings.of(
        rollups_table=args.rollups_table or local["LLM_PROXY__ROLLUPS_TABLE"],
        report_bucket=bucket,
        keys_table=args.keys_table,
        budget_alert_share=args.budget_share,
    )
    try:
        period = parse_period(args.start, args.end, last_hours(24))
        report = report_for(period, settings)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(
            f"error: cannot read the rollups table {settings.rollups_table!r} "
            f"({type(exc).__name__}). Is the local stack running (`make dev`)?",
            file=sys.stderr,
        )
        return 1

    print(to_text(report))
    print()
    folder = args.out / period.label
    folder.mkdir(parents=True, exist_ok=True)
    texts = renderings(report)
    for ext, text in texts.items():
        (folder / f"cost-report.{ext}").write_text(text, encoding="utf-8")
    print(f"Wrote {folder}/cost-report.{{json,csv,html}}")
    if settings.report_bucket:
        try:
            published = publish(report, settings)
        except (BotoCoreError, ClientError) as exc:
            print(f"(not uploaded to s3://{settings.report_bucket}: {type(exc).__name__})")
        else:
            print("Uploaded", *published["objects"], sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
