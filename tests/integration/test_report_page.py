"""The spend report as a page: GET /spend/report?format=html (and format=csv) over real HTTP,
the same renderings the scheduled function writes, from rollups in moto; then the page as a
browser draws it (headless Chromium), checked in its pixels: the charts' colours are there.

The screenshot, by hand (the page saved from the gateway first):
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size=1400,2400 --screenshot=report.png file://$PWD/spend.html
"""

from __future__ import annotations

import csv
import io
import struct
import subprocess
import zlib
from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from llm_proxy.reports.html import OTHER_COLOUR, PALETTE, to_html
from llm_proxy.reports.period import Period
from llm_proxy.reports.render import to_csv
from llm_proxy.reports.report import report_for
from llm_proxy.settings import CostReportSettings
from llm_proxy.store.usage import UsageTable

from tests.support.records import usage_record
from tests.support.stack import MASTER_KEY

CHROMIUM = Path("/usr/bin/chromium")
# Days no other test writes: the page shows exactly what is seeded here.
START, END = date(2021, 2, 1), date(2021, 2, 4)
# (model, agent, cost in USD) per request, per day of the period.
MODELS = ("gpt-4o", "claude-3-haiku", "gpt-3.5-turbo")
AGENTS = ("coder", "architect", "ask")


def seed(aws: dict[str, str]) -> None:
    """Usage through the real write path: each item and its rollup in one transaction."""
    store = UsageTable(aws["UsageTable"], 90, rollups_table=aws["RollupsTable"])
    for offset in range(4):
        noon = f"2021-02-0{offset + 1}T12:00:00+00:00"
        for index, model in enumerate(MODELS):
            for agent in AGENTS[: index + 1]:
                record = usage_record(
                    key_id=f"key-{agent}",
                    agent=agent,
                    model_group=model,
                    prompt_tokens=1000,
                    completion_tokens=200,
                    cost_usd=0.5 / (index + 1) + offset * 0.1,
                    latency_ms=300.0,
                    started_at=datetime.fromisoformat(noon).timestamp(),
                )
                assert store.write(record)


@pytest.fixture(scope="module")
def seeded(aws: dict[str, str]) -> dict[str, str]:
    seed(aws)
    return aws


def get(url: str, query: str, key: str = MASTER_KEY) -> httpx.Response:
    return httpx.get(
        f"{url}/spend/report?{query}", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


PERIOD = f"start={START.isoformat()}&end={END.isoformat()}"


def direct(aws: dict[str, str]) -> Any:
    settings = CostReportSettings.of(rollups_table=aws["RollupsTable"], budget_alert_share=0.8)
    return report_for(Period(START, END), settings)


def test_the_page_is_the_scheduled_report_for_the_period(
    gateway_url: str, seeded: dict[str, str]
) -> None:
    response = get(gateway_url, f"{PERIOD}&format=html")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    report = direct(seeded)
    # Rendered by the same function as the scheduled report; only the time it was made differs.
    assert page.replace(_generated(page), "") == to_html(report).replace(report.generated_at, "")
    titles = ("day by model", "model", "agent", "team", "user", "key")
    assert page.count("<svg") == len(titles)
    for title in titles:
        assert f'aria-label="Cost per {title}, USD"' in page
    # Every chart has its table beside it.
    assert page.count('<div class="pair"><svg') == len(titles)
    assert page.count('</svg><div class="table"><table>') == len(titles)
    # The stacked day chart: every day, each model in a colour of its own (a bar a day, and
    # its legend).
    day_chart = page[page.index("<svg") : page.index("</svg>")]
    for day in ("02-01", "02-02", "02-03", "02-04"):
        assert f">{day}</text>" in day_chart
    for colour in PALETTE[: len(MODELS)]:
        assert day_chart.count(f'fill="{colour}"') == 4 + 1, colour


def _generated(page: str) -> str:
    start = page.index("<p>Generated ") + len("<p>Generated ")
    return page[start : page.index(" from daily rollups.", start)]


def test_csv_and_json_are_the_same_report(gateway_url: str, seeded: dict[str, str]) -> None:
    response = get(gateway_url, f"{PERIOD}&format=csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert (
        response.headers["content-disposition"]
        == 'attachment; filename="cost-report-2021-02-01_2021-02-04.csv"'
    )
    assert response.text == to_csv(direct(seeded))
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 4 * (1 + 2 + 3)
    cost = sum(Decimal(row["cost_usd"]) for row in rows if row["model"] == "gpt-4o")
    assert cost == Decimal("0.5") * 4 + Decimal("0.6")

    body = get(gateway_url, PERIOD).json()
    assert set(body["by_agent"]) == set(AGENTS)
    assert body["total"]["requests"] == len(rows)


def test_a_bad_format_or_a_key_other_than_the_master_key_is_refused(
    gateway_url: str, seeded: dict[str, str]
) -> None:
    bad = get(gateway_url, f"{PERIOD}&format=pdf")
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_format", "format")
    made = httpx.post(
        f"{gateway_url}/key/generate",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"models": ["gpt-3.5-turbo"]},
        timeout=30,
    )
    assert made.status_code == 200, made.text
    refused = get(gateway_url, f"{PERIOD}&format=html", key=made.json()["key"])
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "master_key_required"
    assert get(gateway_url, f"{PERIOD}&format=html", key="sk-wrong-key-1").status_code == 401


# --- the page as a browser draws it ---------------------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit, non-interlaced PNG, with the standard
    library alone (zlib, and the five scanline filters of the PNG specification)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks, header = 8, [], b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0) and colour_type in (2, 6), (depth, colour_type, interlace)
    step = 4 if colour_type == 6 else 3
    stride = width * step
    raw = zlib.decompress(b"".join(chunks))
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(step, stride):
                line[i] = (line[i] + line[i - step]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - step] if i >= step else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - step] if i >= step else 0
                b, c = previous[i], previous[i - step] if i >= step else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = line
    if step == 4:  # drop the alpha channel
        rows = [b"".join(row[i : i + 3] for i in range(0, stride, 4)) for row in rows]
    return width, height, rows


def colour_counts(rows: list[bytes]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for row in rows:
        counts.update(row[i : i + 3].hex() for i in range(0, len(row), 3))
    return counts


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium is not installed (apt-get install chromium)"
)
def test_the_page_is_seen_not_only_parsed(
    gateway_url: str, seeded: dict[str, str], tmp_path: Path
) -> None:
    page = tmp_path / "spend.html"
    page.write_text(get(gateway_url, f"{PERIOD}&format=html").text)
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1400, 1600)
    counts = colour_counts(rows)
    total = width * height
    white = counts["ffffff"]
    assert white < total * 0.97, "the page is blank"
    assert len(counts) > 50, "too few colours for text and charts"
    # Each model's bars (a bar a day, and its bar in the model chart) in its own colour, and
    # no colour for a model that is not there.
    for colour in PALETTE[: len(MODELS)]:
        assert counts[colour.lstrip("#")] > 2000, colour
    assert counts[PALETTE[len(MODELS)].lstrip("#")] == 0
    assert counts[OTHER_COLOUR.lstrip("#")] == 0
