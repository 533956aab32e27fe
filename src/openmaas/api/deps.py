"""FastAPI dependencies, declared once: the platform, a transaction, the caller, scopes, the
organisation an operator route names, pages, idempotency."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from openmaas.bootstrap import Platform
from openmaas.tenancy import idempotency
from openmaas.tenancy import scopes as scope_rules
from openmaas.tenancy import service as tenancy
from openmaas.tenancy.auth import Authenticator, Principal


# Dependencies are `async def` even when they do no I/O: FastAPI runs plain `def` ones in the
# thread pool, which costs more than the work itself on the hot path.
async def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def _write_session(request: Request) -> Iterator[Session]:
    with request.app.state.platform.db.session() as session:
        yield session


def _read_session(request: Request) -> Iterator[Session]:
    with request.app.state.platform.db.read_session() as session:
        yield session


# A transaction around the route function: committed when it returns, before the response is sent
# (scope "function"), rolled back if it raises. A route that must act after the commit (load a
# replica that reads the row, drop a cache entry, remove files) opens its own
# `platform.db.session()` instead, and says why.
SessionDep = Annotated[Session, Depends(_write_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(_read_session, scope="function")]


async def authenticate(authenticator: Authenticator, authorization: str | None) -> Principal:
    """The caller of an `Authorization` header: from the cache, else from the database off the loop."""
    principal = authenticator.cached(authorization)
    if principal is None:
        principal = await run_in_threadpool(authenticator.authenticate, authorization)
    return principal


async def current_principal(request: Request) -> Principal:
    principal = await authenticate(
        request.app.state.platform.authenticator, request.headers.get("authorization")
    )
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def scope(needed: str) -> Any:
    """A dependency giving the caller after checking it holds `needed` (`operator` included)."""

    async def checked(principal: PrincipalDep) -> Principal:
        principal.require(needed)
        if needed != scope_rules.OPERATOR:
            principal.require_org()
        return principal

    return Depends(checked)


Operator = Annotated[Principal, scope(scope_rules.OPERATOR)]


def _target_org(org_id: str, platform: PlatformDep, _: Operator) -> str:
    # The caller is checked first, so only the operator learns which organisations exist. The read
    # is short and its own, over before the route opens its transaction.
    with platform.db.read_session() as session:
        return tenancy.find_organization(session, org_id).id


# The id of the organisation that `/v1/admin/organizations/{org_id}/…` names, by id or by name
# (404 `not_found` when there is none).
TargetOrg = Annotated[str, Depends(_target_org)]


async def _audited_target_org(request: Request, org_id: TargetOrg) -> str:
    request.state.audit_org_id = org_id
    return org_id


# The same, and the route's audit entry is filed under that organisation (not the operator's).
AuditedTargetOrg = Annotated[str, Depends(_audited_target_org)]


class PageParams(BaseModel):
    limit: int
    after: str | None


async def page_params(
    request: Request,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="Items per page")] = None,
    after: Annotated[str | None, Query(max_length=100, description="Return items after this id")] = None,
) -> PageParams:
    settings = request.app.state.platform.settings
    return PageParams(limit=min(limit or settings.default_page_limit, settings.max_page_limit), after=after)


PageDep = Annotated[PageParams, Depends(page_params)]


Public = TypeVar("Public", bound=BaseModel)


class Creator:
    """Runs a create under the request's `Idempotency-Key`, if any, and shapes the response."""

    def __init__(
        self,
        request: Request,
        principal: PrincipalDep,
        idempotency_key: Annotated[
            str | None,
            # `idempotency.run_idempotent` checks the length (400 naming the header).
            Header(alias="Idempotency-Key", json_schema_extra={"minLength": 1, "maxLength": 255}),
        ] = None,
    ) -> None:
        self.request = request
        self.principal = principal
        self.key = idempotency_key

    def __call__(
        self, body: BaseModel, create: Callable[[Session], BaseModel], status: int = 201
    ) -> Response:
        result = self._run(body, create, status)
        return Response(_json(result[1]), status_code=result[0], media_type="application/json")

    def created(self, body: BaseModel, create: Callable[[Session], Public], public: type[Public]) -> Public:
        """For a route that acts on what it created (after the commit): the created thing, or the
        one a replay stored, as `public`; the route answers it with its own status (201)."""
        return public.model_validate(self._run(body, create, 201)[1])

    def _run(
        self, body: BaseModel, create: Callable[[Session], BaseModel], status: int
    ) -> idempotency.Created:
        platform: Platform = self.request.app.state.platform
        canonical = _json(body.model_dump(mode="json"), sort_keys=True)
        return idempotency.run_idempotent(
            platform.db,
            owner=self.principal.org_id or self.principal.key_id,
            key=self.key,
            fingerprint_=idempotency.fingerprint(self.request.method, self.request.url.path, canonical),
            now=platform.clock.now(),
            ttl=timedelta(seconds=platform.settings.idempotency_ttl_s),
            create=lambda session: (status, create(session).model_dump(mode="json")),
        )


CreatorDep = Annotated[Creator, Depends()]


def _json(value: Any, *, sort_keys: bool = False) -> bytes:
    """`value` as JSON. Free-form objects (engine settings, hyperparameters) may hold integers
    past 64 bits, which JSON allows and orjson refuses; the standard library writes those."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False).encode()
