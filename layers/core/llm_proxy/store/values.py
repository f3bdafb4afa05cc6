"""DynamoDB value conversion, both ways: Python values to what boto3 sends (numbers as
Decimal; the low-level client's attribute values) and DynamoDB items back to Python values."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def number(value: Any, digits: int | None = None) -> Any:
    """A value as DynamoDB stores it: a float as a Decimal (str() keeps a float's shortest
    exact form; `digits` rounds it first), anything else as it is."""
    if not isinstance(value, float):
        return value
    return Decimal(str(value if digits is None else round(value, digits)))


def attribute(value: Any) -> dict[str, Any]:
    """A Python value in the low-level client's form ({"N": "1.5"}, {"S": ...})."""
    return dict(_SERIALIZER.serialize(number(value)))


def number_attribute(value: Decimal | int) -> dict[str, str]:
    """A number in the low-level client's form, as it is (no rounding to DynamoDB's 38 digits:
    DynamoDB itself refuses what it cannot store); ValueError for NaN or an infinity."""
    if not Decimal(value).is_finite():
        raise ValueError(f"not a number DynamoDB can store: {value}")
    return {"N": str(value)}


def from_attribute(value: Any) -> Any:
    """A low-level attribute value as a Python value (numbers as Decimal)."""
    return _DESERIALIZER.deserialize(value)


def from_attributes(item: Mapping[str, Any] | None) -> dict[str, Any]:
    """A low-level item (or None: an empty one) as Python values (numbers as Decimal)."""
    return {name: from_attribute(value) for name, value in (item or {}).items()}


def plain(value: Any) -> Any:
    """A value read from DynamoDB with its Decimals as ints or floats, in maps and lists too."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
