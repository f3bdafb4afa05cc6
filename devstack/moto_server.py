"""The local stack's moto server: moto's DynamoDB made atomic and its transactions made cheap,
served on loopback. `make dev` and the benches run it as a process of its own
(`python -m devstack.moto_server --port N`), the tests in a thread (`devstack.aws.start_moto`).

Two departures from moto as it ships, both towards DynamoDB's behaviour:

- Each DynamoDB call runs alone (`AtomicDynamoDB`): moto's server answers requests on threads
  without a lock, so two conditional updates could both pass their condition.
- `TransactWriteItems` snapshots only the items it writes (`transact_write_items`). moto
  deep-copies every table a transaction touches, to roll back on failure, so each usage write
  (a transaction on the usage and rollups tables) costs time and memory in proportion to the
  tables, and the local stack slowed down and grew with use. DynamoDB's cost does not grow.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from devstack.processes import exit_with_parent

# --- atomic DynamoDB calls ------------------------------------------------------------------


class AtomicDynamoDB:
    """DynamoDB applies each write atomically, conditions included; moto's server handles
    concurrent requests on threads without a lock. This WSGI wrapper serialises DynamoDB calls,
    so conditional updates behave under concurrency as they do in AWS."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            # Read the whole body inside the lock: the write happens while it is produced.
            return list(self.app(environ, start_response))


# --- transactions that snapshot the items they write ---------------------------------------

ItemKey = tuple[DynamoType, DynamoType | None]


class _Snapshot:
    """The items a transaction is about to write, as they were (None: absent), and each
    table's stream length, so a failed transaction can put back exactly what it changed."""

    def __init__(self) -> None:
        self.items: dict[tuple[int, ItemKey], tuple[Table, Item | None]] = {}
        self.streams: dict[int, tuple[Table, int]] = {}

    def keep(self, table: Table, key: dict[str, Any]) -> None:
        hash_value = DynamoType(key[table.hash_key_attr])
        range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        slot = (id(table), (hash_value, range_value))
        if slot not in self.items:
            # A copy: an Update changes the stored item in place.
            current = copy.deepcopy(table.get_item(hash_value, range_value))
            self.items[slot] = (table, current)
        if table.stream_shard is not None and id(table) not in self.streams:
            self.streams[id(table)] = (table, len(table.stream_shard.items))

    def restore(self) -> None:
        for (_, (hash_value, range_value)), (table, item) in self.items.items():
            if range_value is None:
                if item is None:
                    table.items.pop(hash_value, None)
                else:
                    table.items[hash_value] = item  # type: ignore[assignment]
            elif item is None:
                table.items.get(hash_value, {}).pop(range_value, None)
            else:
                table.items[hash_value][range_value] = item
        for table, length in self.streams.values():
            if table.stream_shard is not None:
                del table.stream_shard.items[length:]


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """moto 5's `DynamoDBBackend.transact_write_items`, with its rollback copy limited to the
    items the transaction writes instead of every table it names."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    snapshot = _Snapshot()
    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    errors: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        if len(list(item.keys())) > 1:
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            names = op.get("ExpressionAttributeNames")
            values = op.get("ExpressionAttributeValues")
            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            check_unicity(table_name, key)

            current = self.get_item(table_name, key)
            if condition_expression is not None:
                condition = get_filter_expression(condition_expression, names, values)
                if not condition.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)

            if op_type != "ConditionCheck":
                snapshot.keep(self.get_table(table_name), key)
            conditions: dict[str, Any] = {
                "condition_expression": condition_expression,
                "expression_attribute_names": names,
                "expression_attribute_values": values,
            }
            if op_type == "Put":
                self.put_item(table_name, op["Item"], **conditions)
            elif op_type == "Delete":
                self.delete_item(table_name, key, **conditions)
            elif op_type == "Update":
                update = op["UpdateExpression"]
                self.update_item(table_name, key, update_expression=update, **conditions)
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            snapshot.restore()
            raise
        except ConditionalCheckFailed as exc:
            errors.append(("ConditionalCheckFailed", str(exc.message), original_item))
        except Exception as exc:  # moto reports any other failure as the item's cancellation
            errors.append((type(exc).__name__, str(exc), original_item))

    if any(code is not None for code, _, _ in errors):
        snapshot.restore()
        raise TransactionCanceledException(errors)


def snapshot_transactions() -> None:
    """Make moto's transactions in this process copy only the items they write."""
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


# --- the server -----------------------------------------------------------------------------


def local_moto_app() -> AtomicDynamoDB:
    """moto's WSGI app as the local stack serves it: every service, DynamoDB atomic and with
    snapshot transactions."""
    snapshot_transactions()
    # One access-log line per AWS call would drown the caller's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return AtomicDynamoDB(DomainDispatcherApplication(create_backend_app))


def make_local_server(host: str, port: int) -> BaseWSGIServer:
    return make_server(host, port, local_moto_app(), True, request_handler=MotoRequestHandler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.moto_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, help="exit when this process id is gone")
    args = parser.parse_args(argv)
    if args.parent is not None:
        exit_with_parent(args.parent)
    server = make_local_server(args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
