"""The cost report as JSON, CSV (one row per rollup, its labels never read as formulas) and
readable text; the HTML page is `reports.html`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llm_proxy.accounting.rollups import NONE
from llm_proxy.accounting.totals import Totals, money
from llm_proxy.errors import INVALID_FORMAT, DomainError
from llm_proxy.reports.html import to_html
from llm_proxy.reports.report import Report

LABEL_COLUMNS = ("day", "model", "key_id", "agent", "team_id", "user_id")
CSV_COLUMNS = (*LABEL_COLUMNS, *Totals.columns())
# A spreadsheet reads a cell that starts with one of these as a formula (OWASP's CSV injection
# guidance), and callers choose the model and agent names a row carries (and operators the team
# and user ids).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def to_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2)


def to_csv(report: Report) -> str:
    out = io.StringIO()
    # RFC 4180's line ends: with them, a label holding a bare CR is quoted like one holding a
    # newline, rather than breaking its row in two.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        values = row.as_dict()
        writer.writerow(
            [text_cell(getattr(row, label)) for label in LABEL_COLUMNS]
            + [values[name] for name in Totals.columns()]
        )
    return out.getvalue()


def text_cell(value: str) -> str:
    """A label as a spreadsheet shows it, never as a formula: a leading quote makes it text.
    A lone `-` (no key, agent, team or user) is text already."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) and value != NONE else value


def _table(title: str, groups: Mapping[str, Totals], limit: int | None = None) -> list[str]:
    header = f"{title:<32} {'requests':>9} {'errors':>7} {'tokens':>12} {'cost USD':>14}"
    lines = [header, "-" * len(header)]
    for name, totals in list(groups.items())[:limit]:
        tokens = totals.prompt_tokens + totals.completion_tokens
        lines.append(
            f"{name[:32]:<32} {totals.requests:>9} {totals.errors:>7} {tokens:>12} "
            f"{money(totals.cost_usd):>14.6f}"
        )
    return lines


def to_text(report: Report, limit: int | None = None) -> str:
    """A readable summary: totals, then per model, key, agent, team, user and day."""
    total = report.total
    lines = [
        f"LLM Proxy cost report {report.period.start} to {report.period.end} (UTC days)",
        f"Total ${money(total.cost_usd):.6f} over {total.requests} requests "
        f"({total.errors} errors, {total.prompt_tokens + total.completion_tokens} tokens, "
        f"{total.cache_hits} cache hits)",
        "",
    ]
    for title, groups in (
        ("model", report.by_model),
        ("key", report.by_key),
        ("agent", report.by_agent),
        ("team", report.by_team),
        ("user", report.by_user),
        ("day", report.by_day),
    ):
        lines += [*_table(title, groups, limit), ""]
    if report.flagged:
        lines.append(f"Keys past {report.budget_share:.0%} of their budget:")
        lines += [
            f"  {flag.alias or flag.key_id}: ${money(flag.spend):.2f} of "
            f"${money(flag.max_budget):.2f} ({flag.share:.0%})"
            for flag in report.flagged
        ]
    else:
        lines.append(f"No key past {report.budget_share:.0%} of its budget.")
    return "\n".join(lines)


# The formats `GET /spend/report` serves.
FORMATS = ("json", "html", "csv")


@dataclass(frozen=True)
class Rendered:
    """A report in one format: a JSON-able body, or text with its media type and, for a
    download, its file name."""

    body: Any
    media_type: str = "application/json"
    filename: str | None = None


def check_format(output: str) -> None:
    if output not in FORMATS:
        raise DomainError(
            INVALID_FORMAT, f"'format' must be one of {', '.join(FORMATS)}.", "format"
        )


def rendered(report: Report, output: str) -> Rendered:
    """The report as `output` (one of FORMATS) asks."""
    check_format(output)
    if output == "html":
        return Rendered(to_html(report), "text/html; charset=utf-8")
    if output == "csv":
        name = f"cost-report-{report.period.label}.csv"
        return Rendered(to_csv(report), "text/csv; charset=utf-8", name)
    return Rendered(report.as_dict())
