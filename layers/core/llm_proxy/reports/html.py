"""The cost report as one self-contained HTML page: inline CSS and inline SVG bar charts
(cost per day, per model, per key and per agent), no script and nothing fetched."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from llm_proxy.accounting.counters import Counters, money
from llm_proxy.reports.report import Report

BAR_COLOUR = "#3b6ea5"
WIDTH = 640
ROW_HEIGHT = 22
LABEL_WIDTH = 200
CHART_LIMIT = 15

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1d2733; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem 1rem; }
.card b { display: block; font-size: 1.3rem; }
table { border-collapse: collapse; margin-top: .5rem; }
th, td { border-bottom: 1px solid #d0d7de; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.flag { color: #b42318; }
"""


def _bars(title: str, groups: Mapping[str, Counters]) -> str:
    """A horizontal bar chart of cost, one bar per group (the costliest first)."""
    items = list(groups.items())[:CHART_LIMIT]
    height = ROW_HEIGHT * max(len(items), 1) + 10
    top = max((totals.cost_usd for _, totals in items), default=0) or 1
    span = WIDTH - LABEL_WIDTH - 110
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for index, (name, totals) in enumerate(items):
        y = 5 + index * ROW_HEIGHT
        length = float(totals.cost_usd / top) * span
        parts += [
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end" font-size="12">'
            f"{escape(name[:32])}</text>",
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" height="{ROW_HEIGHT - 6}" '
            f'fill="{BAR_COLOUR}"><title>{escape(name)}: ${money(totals.cost_usd):.6f}</title>'
            "</rect>",
            f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + 15}" font-size="12">'
            f"${money(totals.cost_usd):.4f}</text>",
        ]
    if not items:
        parts.append('<text x="10" y="20" font-size="12">No usage in this period.</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(title: str, groups: Mapping[str, Counters]) -> str:
    head = (
        f"<tr><th>{escape(title)}</th><th>requests</th><th>errors</th><th>prompt tokens</th>"
        "<th>completion tokens</th><th>cost USD</th><th>cache hits</th><th>avg ms</th>"
        "<th>max ms</th></tr>"
    )
    body = []
    for name, totals in groups.items():
        row = totals.as_dict()
        body.append(
            f"<tr><td>{escape(name)}</td><td>{row['requests']}</td><td>{row['errors']}</td>"
            f"<td>{row['prompt_tokens']}</td><td>{row['completion_tokens']}</td>"
            f"<td>{row['cost_usd']:.6f}</td><td>{row['cache_hits']}</td>"
            f"<td>{row['latency_ms_avg']}</td><td>{row['latency_ms_max']}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def to_html(report: Report) -> str:
    period = f"{report.period.start} to {report.period.end}"
    total = report.total.as_dict()
    cards = "".join(
        f'<div class="card">{escape(label)}<b>{escape(value)}</b></div>'
        for label, value in (
            ("Cost (USD)", f"${total['cost_usd']:.4f}"),
            ("Requests", str(total["requests"])),
            ("Errors", str(total["errors"])),
            ("Tokens", str(total["total_tokens"])),
            ("Cache hits", str(total["cache_hits"])),
        )
    )
    if report.flagged:
        flags = "".join(
            f'<li class="flag">{escape(flag.alias or flag.key_id)}: ${money(flag.spend):.2f} of '
            f"${money(flag.max_budget):.2f} ({flag.share:.0%})</li>"
            for flag in report.flagged
        )
        budget = f"<ul>{flags}</ul>"
    else:
        budget = f"<p>No key past {report.budget_share:.0%} of its budget.</p>"
    sections = []
    for title, groups in (
        ("day", report.by_day),
        ("model", report.by_model),
        ("key", report.by_key),
        ("agent", report.by_agent),
    ):
        sections.append(
            f"<section><h2>Cost per {title}</h2>"
            f"{_bars(f'Cost per {title}, USD', groups)}{_table(title, groups)}</section>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>LLM Proxy cost report {escape(period)}</title><style>{STYLE}</style></head>"
        f"<body><h1>LLM Proxy cost report, {escape(period)} (UTC)</h1>"
        f'<div class="cards">{cards}</div>'
        f"<h2>Keys past {report.budget_share:.0%} of their budget</h2>{budget}"
        f"{''.join(sections)}"
        f"<p>Generated {escape(report.generated_at)} from daily rollups.</p></body></html>\n"
    )
