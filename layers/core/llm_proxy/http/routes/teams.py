"""Team and user management (`/team/*`, `/user/*`), in LiteLLM's shapes: the master key
only."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from fastapi import APIRouter, Query

from llm_proxy.http.dependencies import GatewayDep, MasterKey
from llm_proxy.http.principal_schemas import (
    TeamDeleteRequest,
    TeamNewRequest,
    TeamUpdateRequest,
    UserDeleteRequest,
    UserNewRequest,
    UserUpdateRequest,
)

router = APIRouter(tags=["teams and users"], dependencies=[MasterKey])


@router.post("/team/new")
async def team_new(body: TeamNewRequest, gateway: GatewayDep) -> dict[str, Any]:
    admin = gateway.team_admin
    team = await asyncio.to_thread(admin.new, body.model_dump(exclude_unset=True))
    return await asyncio.to_thread(admin.shown, team)


@router.get("/team/info")
async def team_info(gateway: GatewayDep, team_id: str = Query(min_length=1)) -> dict[str, Any]:
    return await asyncio.to_thread(gateway.team_admin.info, team_id)


@router.get("/team/list")
async def team_list(gateway: GatewayDep) -> list[dict[str, Any]]:
    return await asyncio.to_thread(gateway.team_admin.listed)


@router.post("/team/update")
async def team_update(body: TeamUpdateRequest, gateway: GatewayDep) -> dict[str, Any]:
    """LiteLLM's answer: the team's id and the team as updated (`data`)."""
    admin = gateway.team_admin
    team = await asyncio.to_thread(admin.update, body.model_dump(exclude_unset=True))
    return {"team_id": team.id, "data": await asyncio.to_thread(admin.shown, team)}


@router.post("/team/delete")
async def team_delete(body: TeamDeleteRequest, gateway: GatewayDep) -> dict[str, Any]:
    """The teams become tombstones and their keys are deleted."""
    deleted = await asyncio.to_thread(gateway.team_admin.delete, body.team_ids)
    return {"deleted_teams": deleted}


@router.post("/user/new")
async def user_new(body: UserNewRequest, gateway: GatewayDep) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True)
    return await asyncio.to_thread(gateway.user_admin.new_with_key, fields)


@router.get("/user/info")
async def user_info(gateway: GatewayDep, user_id: str = Query(min_length=1)) -> dict[str, Any]:
    return await asyncio.to_thread(gateway.user_admin.info, user_id)


@router.get("/user/list")
async def user_list(
    gateway: GatewayDep,
    page: int = Query(1, ge=1),
    page_size: int = Query(25, ge=1, le=100),
) -> dict[str, Any]:
    """LiteLLM's page of users."""
    return await asyncio.to_thread(partial(gateway.user_admin.page, page, page_size))


@router.post("/user/update")
async def user_update(body: UserUpdateRequest, gateway: GatewayDep) -> dict[str, Any]:
    """LiteLLM's answer: the user as updated."""
    admin = gateway.user_admin
    user = await asyncio.to_thread(admin.update, body.model_dump(exclude_unset=True))
    return await asyncio.to_thread(admin.shown, user)


@router.post("/user/delete")
async def user_delete(body: UserDeleteRequest, gateway: GatewayDep) -> dict[str, Any]:
    """The users become tombstones and their keys are deleted."""
    deleted = await asyncio.to_thread(gateway.user_admin.delete, body.user_ids)
    return {"deleted_users": deleted}
