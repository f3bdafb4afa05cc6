"""Teams and users written straight into the keys table, item for item as `/team/new` and
`/user/new` store them (`Principal.to_item`). Swap for those routes where they are served."""

from __future__ import annotations

import boto3
from llm_proxy.access.principals import Principal


def put_principal(keys_table: str, principal: Principal) -> Principal:
    boto3.resource("dynamodb").Table(keys_table).put_item(Item=principal.to_item())
    return principal
