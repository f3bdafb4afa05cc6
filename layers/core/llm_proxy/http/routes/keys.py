"""Virtual key management (`/key/*`), in LiteLLM's shapes: the master key only, but for a key
reading its own info (`GET /key/info` without `key`), as LiteLLM allows."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from fastapi import APIRouter, Query

from llm_proxy.errors import INVALID_VALUE
from llm_proxy.http.dependencies import Authenticated, GatewayDep, MasterKey, master_key_only
from llm_proxy.http.schemas import (
    KeyDeleteRequest,
    KeyGenerateRequest,
    KeyRegenerateRequest,
    KeyUpdateRequest,
)

router = APIRouter(tags=["keys"])


@router.post("/key/generate", dependencies=[MasterKey])
async def key_generate(body: KeyGenerateRequest, gateway: GatewayDep) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True)
    return await asyncio.to_thread(gateway.key_admin.generate, fields)


@router.post("/key/update", dependencies=[MasterKey])
async def key_update(body: KeyUpdateRequest, gateway: GatewayDep) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True)
    return await asyncio.to_thread(gateway.key_admin.update, fields)


@router.post("/key/{key}/regenerate", dependencies=[MasterKey])
async def key_regenerate(
    key: str, gateway: GatewayDep, body: KeyRegenerateRequest | None = None
) -> dict[str, Any]:
    """The same key under a new secret (LiteLLM's rotation); the old one works for
    `grace_period`, or no longer."""
    fields = body.model_dump(exclude_unset=True) if body else {}
    fields.pop("key", None)
    return await asyncio.to_thread(gateway.key_admin.regenerate, key, fields)


@router.post("/key/regenerate", dependencies=[MasterKey])
async def key_regenerate_named(body: KeyRegenerateRequest, gateway: GatewayDep) -> dict[str, Any]:
    """LiteLLM's other form: the key in the body."""
    fields = body.model_dump(exclude_unset=True)
    named = fields.pop("key", None)
    if not named:
        raise INVALID_VALUE("'key' is required.", param="key")
    return await asyncio.to_thread(gateway.key_admin.regenerate, named, fields)


@router.post("/key/delete", dependencies=[MasterKey])
async def key_delete(body: KeyDeleteRequest, gateway: GatewayDep) -> dict[str, Any]:
    return await asyncio.to_thread(gateway.key_admin.delete, body.keys)


@router.get("/key/info")
async def key_info(
    gateway: GatewayDep, who: Authenticated, key: str | None = None
) -> dict[str, Any]:
    """A key's info: any key's for the master key; without `key`, the caller's own."""
    if key is None:
        if who.is_master:
            raise INVALID_VALUE("'key' is required with the master key.", param="key")
        if who.key is None:
            # A JWT's developer has no key of its own.
            await master_key_only(who)
        key = who.key_id
    else:
        await master_key_only(who)
    return await asyncio.to_thread(gateway.key_admin.info, key)


@router.get("/key/list", dependencies=[MasterKey])
async def key_list(
    gateway: GatewayDep,
    page: int = Query(1, ge=1),
    size: int = Query(10, ge=1, le=100),
    return_full_object: bool = False,
    user_id: str | None = None,
    team_id: str | None = None,
    key_alias: str | None = None,
    key_hash: str | None = None,
) -> dict[str, Any]:
    """LiteLLM's page of keys (its query parameters and its filters)."""
    filters = {"user_id": user_id, "team_id": team_id, "key_alias": key_alias, "token": key_hash}
    listing = partial(
        gateway.key_admin.list, full=return_full_object, page=page, size=size, filters=filters
    )
    return await asyncio.to_thread(listing)
