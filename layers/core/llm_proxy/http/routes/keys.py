"""Virtual key management (`/key/*`, master key only), in LiteLLM's shapes."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from llm_proxy.http.dependencies import Authenticated, GatewayDep
from llm_proxy.http.schemas import KeyDeleteRequest, KeyGenerateRequest, KeyUpdateRequest
from llm_proxy.pipeline.validate import refuse_non_finite, refuse_unencodable_text

router = APIRouter(tags=["keys"])


@router.post("/key/generate")
async def key_generate(
    body: KeyGenerateRequest, gateway: GatewayDep, who: Authenticated
) -> dict[str, Any]:
    who.require_master()
    fields = body.model_dump(exclude_unset=True)
    refuse_unencodable_text(fields)
    refuse_non_finite(fields)
    return await asyncio.to_thread(gateway.key_admin.generate, fields)


@router.post("/key/update")
async def key_update(
    body: KeyUpdateRequest, gateway: GatewayDep, who: Authenticated
) -> dict[str, Any]:
    who.require_master()
    fields = body.model_dump(exclude_unset=True)
    refuse_unencodable_text(fields)
    refuse_non_finite(fields)
    return await asyncio.to_thread(gateway.key_admin.update, fields)


@router.post("/key/delete")
async def key_delete(
    body: KeyDeleteRequest, gateway: GatewayDep, who: Authenticated
) -> dict[str, Any]:
    who.require_master()
    return await asyncio.to_thread(gateway.key_admin.delete, body.keys)


@router.get("/key/info")
async def key_info(key: str, gateway: GatewayDep, who: Authenticated) -> dict[str, Any]:
    who.require_master()
    return await asyncio.to_thread(gateway.key_admin.info, key)


@router.get("/key/list")
async def key_list(
    gateway: GatewayDep, who: Authenticated, return_full_object: bool = False
) -> dict[str, Any]:
    who.require_master()
    return await asyncio.to_thread(gateway.key_admin.list, return_full_object)
