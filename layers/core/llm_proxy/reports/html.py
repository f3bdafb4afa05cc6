"""The cost report as one self-contained HTML page: inline CSS and inline SVG charts (cost per
day stacked by model, cost per model, agent, team, user and key), each with a text table beside
it; no script and nothing fetched. The scheduled report and GET /spend/report?format=html serve
it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from html import escape

from llm_proxy.accounting.totals import Totals, money
from llm_proxy.reports.report import Report

# Distinct hues (Tableau's palette, its grey kept for other models); a model keeps its colour in
# every chart.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#9c755f",
)
OTHER = "other models"
OTHER_COLOUR = "#bab0ac"
BAR_COLOUR = PALETTE[0]
WIDTH = 560
ROW_HEIGHT = 22
LABEL_WIDTH = 160
CHART_LIMIT = 15
# The day chart's plot area and margins.
DAY_HEIGHT = 220
DAY_LEFT, DAY_RIGHT, DAY_TOP, DAY_BOTTOM = 70, 10, 10, 26
DAY_LABELS = 8
LEGEND_ROW = 18

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1d2733; background: #fff; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem 1rem; }
.card b { display: block; font-size: 1.3rem; }
.pair { display: flex; gap: 2rem; flex-wrap: wrap; align-items: flex-start; }
.pair svg { flex: none; }
.pair .table { flex: 1 1 22rem; min-width: 0; overflow-x: auto; }
table { border-collapse: collapse; margin-top: .5rem; font-size: .85rem; }
th, td { border-bottom: 1px solid #d0d7de; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td { white-space: nowrap; }
.swatch { display: inline-block; width: .7rem; height: .7rem; margin-right: .3rem; }
.flag { color: #b42318; }
"""


def _usd(value: Decimal, places: int = 6) -> str:
    return f"${money(value):.{places}f}"


def colours(models: Sequence[str]) -> dict[str, str]:
    """Each of the costliest models its own colour; the rest share OTHER's."""
    shown = dict(zip([m for m in models if m != OTHER], PALETTE, strict=False))
    return {model: shown.get(model, OTHER_COLOUR) for model in models}


def _nice_top(value: float) -> float:
    """A round number at or above `value`, for the axis (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1.0, 2.0, 5.0, 10.0) if step * power >= value)


def _svg_open(title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]


def _by_day_and_model(report: Report) -> dict[str, dict[str, Decimal]]:
    """Cost per day and model, every day of the period present."""
    costs: dict[str, dict[str, Decimal]] = {day: {} for day in report.by_day}
    for row in report.rows:
        day = costs.setdefault(row.day, {})
        day[row.model] = day.get(row.model, Decimal(0)) + row.cost_usd
    return costs


def _series(report: Report) -> list[str]:
    """The models the day chart draws apart (the costliest); the rest are OTHER."""
    models = list(report.by_model)
    if len(models) <= len(PALETTE):
        return models
    return [*models[: len(PALETTE) - 1], OTHER]


def _stacked(
    days: Mapping[str, Mapping[str, Decimal]], series: list[str]
) -> dict[str, list[Decimal]]:
    """Each day's cost per series, OTHER taking every model not drawn apart."""
    stacked: dict[str, list[Decimal]] = {}
    for day, costs in days.items():
        values = [costs.get(model, Decimal(0)) for model in series]
        if OTHER in series:
            values[-1] = sum(
                (cost for model, cost in costs.items() if model not in series), Decimal(0)
            )
        stacked[day] = values
    return stacked


def _day_chart(title: str, stacked: Mapping[str, list[Decimal]], series: list[str]) -> str:
    """Vertical bars, one a day, each stacked by model, with a y axis in USD and a legend."""
    palette = colours(series)
    legend_rows = math.ceil(len(series) / 3)
    height = DAY_TOP + DAY_HEIGHT + DAY_BOTTOM + legend_rows * LEGEND_ROW + 6
    parts = _svg_open(title, WIDTH, height)
    plot_width = WIDTH - DAY_LEFT - DAY_RIGHT
    bottom = DAY_TOP + DAY_HEIGHT
    highest = max((float(sum(values, Decimal(0))) for values in stacked.values()), default=0.0)
    if not series or highest <= 0:
        message = "No usage in this period." if not series else "No cost in this period."
        parts.append(
            f'<text x="{DAY_LEFT + plot_width / 2:.1f}" y="{DAY_TOP + DAY_HEIGHT / 2:.1f}" '
            f'text-anchor="middle" font-size="12">{message}</text>'
        )
    top = _nice_top(highest)
    # As many decimals as the step between ticks needs, and at least cents.
    step = top / 4
    decimals = next((d for d in range(2, 16) if abs(round(step, d) - step) <= step * 1e-9), 16)
    for tick in range(5):
        value = top * tick / 4
        y = bottom - DAY_HEIGHT * tick / 4
        parts += [
            f'<line x1="{DAY_LEFT}" y1="{y:.1f}" x2="{WIDTH - DAY_RIGHT}" y2="{y:.1f}" '
            'stroke="#d0d7de" stroke-width="1"></line>',
            f'<text x="{DAY_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
            f"${value:.{decimals}f}</text>",
        ]
    band = plot_width / max(len(stacked), 1)
    bar = max(band * 0.7, 1.0)
    label_every = math.ceil(len(stacked) / DAY_LABELS) or 1
    for index, (day, values) in enumerate(stacked.items()):
        x = DAY_LEFT + index * band + (band - bar) / 2
        y = float(bottom)
        for model, cost in zip(series, values, strict=True):
            length = float(cost) / top * DAY_HEIGHT
            if length <= 0:
                continue
            y -= length
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{length:.1f}" '
                f'fill="{palette[model]}"><title>{escape(day)} {escape(model)}: '
                f"{_usd(cost)}</title></rect>"
            )
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{bottom + 16}" text-anchor="middle" '
                f'font-size="11">{escape(day[5:])}</text>'
            )
    for index, model in enumerate(series):
        x = DAY_LEFT + (index % 3) * (plot_width / 3)
        y = bottom + DAY_BOTTOM + (index // 3) * LEGEND_ROW
        parts += [
            f'<rect x="{x:.1f}" y="{y + 2}" width="10" height="10" fill="{palette[model]}"></rect>',
            f'<text x="{x + 14:.1f}" y="{y + 11}" font-size="11">{escape(model[:28])}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def _day_table(stacked: Mapping[str, list[Decimal]], series: list[str]) -> str:
    palette = colours(series)
    head = "".join(
        f'<th><span class="swatch" style="background:{palette[m]}"></span>{escape(m)}</th>'
        for m in series
    )
    body = "".join(
        f"<tr><td>{escape(day)}</td>"
        + "".join(f"<td>{money(v):.6f}</td>" for v in values)
        + f"<td>{money(sum(values, Decimal(0))):.6f}</td></tr>"
        for day, values in stacked.items()
    )
    return f"<table><tr><th>day (USD)</th>{head}<th>total</th></tr>{body}</table>"


def _bars(
    title: str, groups: Mapping[str, Totals], palette: Mapping[str, str] | None = None
) -> str:
    """A horizontal bar chart of cost, one bar per group (the costliest first)."""
    items = list(groups.items())[:CHART_LIMIT]
    height = ROW_HEIGHT * max(len(items), 1) + 10
    top = max((totals.cost_usd for _, totals in items), default=0) or 1
    span = WIDTH - LABEL_WIDTH - 110
    parts = _svg_open(title, WIDTH, height)
    for index, (name, totals) in enumerate(items):
        y = 5 + index * ROW_HEIGHT
        length = float(totals.cost_usd / top) * span
        colour = (palette or {}).get(name, BAR_COLOUR)
        parts += [
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end" font-size="12">'
            f"{escape(name[:28])}</text>",
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" height="{ROW_HEIGHT - 6}" '
            f'fill="{colour}"><title>{escape(name)}: {_usd(totals.cost_usd)}</title></rect>',
            f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + 15}" font-size="12">'
            f"{_usd(totals.cost_usd, 4)}</text>",
        ]
    if not items:
        parts.append('<text x="10" y="20" font-size="12">No usage in this period.</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(title: str, groups: Mapping[str, Totals]) -> str:
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


def _section(title: str, chart: str, beside: str, below: str = "") -> str:
    """A chart with its table beside it (below it on a narrow screen)."""
    return (
        f'<section><h2>{escape(title)}</h2><div class="pair">{chart}'
        f'<div class="table">{beside}</div></div>{below}</section>'
    )


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
    series = _series(report)
    stacked = _stacked(_by_day_and_model(report), series)
    palette = colours(series)
    model_colours = {model: palette.get(model, OTHER_COLOUR) for model in report.by_model}
    sections = [
        _section(
            "Cost per day, by model",
            _day_chart("Cost per day by model, USD", stacked, series),
            _day_table(stacked, series),
            _table("day", report.by_day),
        ),
        _section(
            "Cost per model",
            _bars("Cost per model, USD", report.by_model, model_colours),
            _table("model", report.by_model),
        ),
        _section(
            "Cost per agent",
            _bars("Cost per agent, USD", report.by_agent),
            _table("agent", report.by_agent),
        ),
        _section(
            "Cost per team",
            _bars("Cost per team, USD", report.by_team),
            _table("team", report.by_team),
        ),
        _section(
            "Cost per user",
            _bars("Cost per user, USD", report.by_user),
            _table("user", report.by_user),
        ),
        _section(
            "Cost per key", _bars("Cost per key, USD", report.by_key), _table("key", report.by_key)
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>LLM Proxy cost report {escape(period)}</title><style>{STYLE}</style></head>"
        f"<body><h1>LLM Proxy cost report, {escape(period)} (UTC)</h1>"
        f'<div class="cards">{cards}</div>'
        f"<h2>Keys past {report.budget_share:.0%} of their budget</h2>{budget}"
        f"{''.join(sections)}"
        f"<p>Generated {escape(report.generated_at)} from daily rollups.</p></body></html>\n"
    )
