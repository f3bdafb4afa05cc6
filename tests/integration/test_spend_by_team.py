"""Spend by team and by user: requests of keys of two teams and two users through a served
gateway; their usage items name the team and the user, and `/spend/report` (JSON, CSV, HTML)
and the scheduled cost report break the spend down by both, adding up to the total."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import boto3
import httpx
import pytest
from llm_proxy.accounting.rollups import NONE
from llm_proxy.accounting.totals import money

from tests.support.configs import MASTER_KEY_FROM_SECRET, NO_RETRIES, gateway_config, openai_double
from tests.support.functions import load_function, report_env
from tests.support.gateway_http import new_key, new_team, new_user, post
from tests.support.stack import MASTER_KEY, usage_item


@pytest.fixture(scope="module")
def gateway(gateway_for: Callable[..., str]) -> str:
    return gateway_for(
        gateway_config(
            openai_double(), router_settings=NO_RETRIES, general_settings=MASTER_KEY_FROM_SECRET
        )
    )


def report(gateway: str, day: str, output: str) -> httpx.Response:
    response = httpx.get(
        f"{gateway}/spend/report?start={day}&end={day}&format={output}",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def test_spend_per_team_and_user_adds_up_in_every_report(gateway: str, aws: dict[str, str]) -> None:
    run = uuid.uuid4().hex[:6]
    teams = [f"search-{run}", f"mobile-{run}"]
    users = [f"ann-{run}", f"bob-{run}"]
    new_team(gateway, teams[0], team_alias="Search")
    new_team(gateway, teams[1])
    # One user has a record, the other is only a tag on its keys: either way the report names
    # them.
    new_user(gateway, users[0])
    keys = {
        (team, user): new_key(gateway, team_id=team, user_id=user)
        for team in teams
        for user in users
    }
    # A key of neither: its spend is team and user "-".
    keys[(NONE, NONE)] = new_key(gateway)

    spent: dict[str, dict[str, Decimal]] = {
        "team": defaultdict(Decimal),
        "user": defaultdict(Decimal),
    }
    requests: dict[str, dict[str, int]] = {"team": defaultdict(int), "user": defaultdict(int)}
    # Different prompts and counts per key, so each team and user has a spend of its own.
    for n, ((team, user), key) in enumerate(keys.items()):
        for _ in range(n + 1):
            response = post(
                gateway,
                "/v1/chat/completions",
                {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi " * n}]},
                key=key,
            )
            assert response.status_code == 200, response.text
            item = usage_item(aws["UsageTable"], response.headers["x-request-id"])
            assert (item.get("team_id", NONE), item.get("user_id", NONE)) == (team, user)
            assert item["cost_usd"] > 0
            for kind, name in (("team", team), ("user", user)):
                spent[kind][name] += item["cost_usd"]
                requests[kind][name] += 1
    ours = {"team": teams, "user": users}

    day = datetime.now(UTC).date().isoformat()
    data = report(gateway, day, "json").json()
    for kind in ("team", "user"):
        grouped = data[f"by_{kind}"]
        for name in ours[kind]:
            assert grouped[name]["requests"] == requests[kind][name]
            assert grouped[name]["cost_usd"] == money(spent[kind][name])
        # Every request is some team's (or "-"): the breakdown adds up to the total.
        assert sum(g["requests"] for g in grouped.values()) == data["total"]["requests"]
        assert sum(g["cost_usd"] for g in grouped.values()) == pytest.approx(
            data["total"]["cost_usd"], abs=1e-9
        )

    rows = list(csv.DictReader(io.StringIO(report(gateway, day, "csv").text)))
    for kind in ("team", "user"):
        for name in ours[kind]:
            mine = [r for r in rows if r[f"{kind}_id"] == name]
            assert sum(int(r["requests"]) for r in mine) == requests[kind][name]
            assert sum(Decimal(r["cost_usd"]) for r in mine) == pytest.approx(
                spent[kind][name], abs=Decimal("1e-9")
            )

    page = report(gateway, day, "html").text
    for title, kind in (("Cost per team", "team"), ("Cost per user", "user")):
        section = page[
            page.index(f"<h2>{title}</h2>") : page.index("</section>", page.index(title))
        ]
        for name in ours[kind]:
            cost = money(spent[kind][name])
            assert f"<tr><td>{name}</td><td>{requests[kind][name]}</td>" in section
            assert f"<td>{cost:.6f}</td>" in section

    # The scheduled report of the same day: the same breakdowns in its S3 objects.
    with report_env(aws):
        result = load_function("cost_report").handler({"start": day, "end": day}, None)
    s3 = boto3.client("s3")
    json_object = next(o for o in result["objects"] if o.endswith(".json"))
    scheduled = json.loads(
        s3.get_object(Bucket=aws["ReportBucket"], Key=json_object.split("/", 3)[3])["Body"].read()
    )
    for kind in ("team", "user"):
        for name in ours[kind]:
            totals = scheduled[f"by_{kind}"][name]
            assert (totals["requests"], totals["cost_usd"]) == (
                requests[kind][name],
                money(spent[kind][name]),
            )
