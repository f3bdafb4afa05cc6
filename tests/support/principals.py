"""Teams and users put straight into the keys table a served gateway reads, as
`access.principals` stores them.

Stand-in for `POST /team/new` and `/user/new` in the tests of key fields that need a team or a
user to exist: swap `put_team`/`put_user` for those routes once they are served."""

from __future__ import annotations

from typing import Any

import boto3
from llm_proxy.access.principals import Principal, Team, User

from tests.support.stack import TEST_NAMES


def put_team(team_id: str, **fields: Any) -> Team:
    team = Team(team_id=team_id, **fields)
    _put(team)
    return team


def put_user(user_id: str, **fields: Any) -> User:
    user = User(user_id=user_id, **fields)
    _put(user)
    return user


def _put(principal: Principal) -> None:
    table = boto3.resource("dynamodb").Table(TEST_NAMES["KeysTable"])
    table.put_item(Item=principal.to_item())
