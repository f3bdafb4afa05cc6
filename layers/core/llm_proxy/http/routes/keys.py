"""Virtual key management (`/key/*`, master key only), in LiteLLM's shapes."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from llm_proxy.http.dependencies import GatewayDep, MasterKey
from llm_proxy.http.schemas import KeyDeleteRequest, KeyGenerateRequest, KeyUpdateRequest

router = APIRouter(tags=["keys"], dependencies=[MasterKey])


@router.post("/key/generate")
async def key_generate(body: KeyGenerateRequest, gateway: GatewayDep) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True)
    return await asyncio.to_thread(gateway.key_admin.generate, fields)


@router.post("/key/update")
async def key_update(body: KeyUpdateRequest, gateway: GatewayDep) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True)
    return await asyncio.to_thread(gateway.key_admin.update, fields)


@router.post("/key/delete")
async def key_delete(body: KeyDeleteRequest, gateway: GatewayDep) -> dict[str, Any]:
    return await asyncio.to_thread(gateway.key_admin.delete, body.keys)


@router.get("/key/info")
async def key_info(key: str, gateway: GatewayDep) -> dict[str, Any]:
    return await asyncio.to_thread(gateway.key_admin.info, key)


@router.get("/key/list")
async def key_list(gateway: GatewayDep, return_full_object: bool = False) -> dict[str, Any]:
    return await asyncio.to_thread(gateway.key_admin.list, return_full_object)
