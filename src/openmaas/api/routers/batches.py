"""`/v1/batches`, as OpenAI shapes it: create a batch of a `batch` file's requests, list,
retrieve, cancel. The batch runs in this server's process (`serving.batches.runner`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from openmaas.api.deps import CreatorDep, PageDep, PlatformDep, ReadSessionDep, SessionDep, scope
from openmaas.api.responses import JSON_BODY, KEYED, errors
from openmaas.schemas.batches import BatchCreate, BatchPublic
from openmaas.schemas.pages import Page
from openmaas.serving.batches import service
from openmaas.tenancy import scopes
from openmaas.tenancy.auth import Principal

router = APIRouter(prefix="/v1", tags=["batches"], responses=KEYED)

# A batch is inference sent later: the key must be able to call models.
Caller = Annotated[Principal, scope(scopes.INFERENCE)]


@router.post(
    "/batches",
    response_model=BatchPublic,
    name="batches.create",
    responses=errors(*JSON_BODY, 404, 409),
    openapi_extra={"x-openai-errors": True},  # bad parameters answer 400, as OpenAI's do
)
def create_batch(body: BatchCreate, platform: PlatformDep, caller: Caller, create: CreatorDep) -> object:
    """Check the file's lines (a batch with problems is created `failed`, each named by line in
    `errors`) and queue it."""
    caller.require("datasets:read")
    batch = create.created(
        body,
        lambda session: service.batch_public(
            service.create_batch(
                session,
                platform.store,
                platform.replicas,
                org_id=caller.require_org(),
                api_key_id=caller.key_id,
                body=body,
                now=platform.clock.now(),
            )
        ),
        BatchPublic,
    )
    platform.batches.wake()
    return batch  # 200, as OpenAI answers a create


@router.get("/batches", response_model=Page[BatchPublic], name="batches.list", responses=errors(422))
def list_batches(session: ReadSessionDep, caller: Caller, page: PageDep) -> object:
    return service.list_batches(session, caller.require_org(), limit=page.limit, after=page.after)


@router.get("/batches/{batch_id}", response_model=BatchPublic, name="batches.get", responses=errors(404))
def get_batch(batch_id: str, session: ReadSessionDep, caller: Caller) -> object:
    return service.batch_public(service.get_batch(session, caller.require_org(), batch_id))


@router.post(
    "/batches/{batch_id}/cancel",
    response_model=BatchPublic,
    name="batches.cancel",
    responses=errors(404, 409),
)
def cancel_batch(batch_id: str, session: SessionDep, platform: PlatformDep, caller: Caller) -> object:
    """Stop sending its lines; the answered ones stay in its output file."""
    row = service.cancel_batch(session, caller.require_org(), batch_id, now=platform.clock.now())
    platform.batches.wake()
    return service.batch_public(row)
