"""The operator's pricebooks: every plan's versions (a page at a time) and a form that sets a
plan's prices from now on (a new version) — the same service call and `operator` scope as
`/v1/admin/pricebooks`. Also the form fields of a price list, shared with marketplace listings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from openmaas import errors
from openmaas.billing import pricebooks
from openmaas.console.sessions import SignedIn
from openmaas.console.web import (
    PREFIX,
    ConsoleRoute,
    platform_of,
    redirect,
    render,
    signed_form,
    signed_in,
    validated,
)
from openmaas.schemas import billing as schemas
from openmaas.tenancy import scopes as scope_rules
from openmaas.units import UNITS

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

# (unit, label, what its price is quoted per): the rows of a price form.
PRICE_UNITS = (
    ("requests", "Requests", "per request"),
    ("input_tokens", "Input tokens", "per 1K tokens"),
    ("output_tokens", "Output tokens", "per 1K tokens"),
    ("rows", "Rows", "per row"),
    ("compute_ms", "Compute", "per compute-second"),
    ("bytes_ingested", "Data ingested", "per GB"),
    ("storage_gb_month_micros", "Storage", "per GB-month"),
    ("trained_tokens", "Fine-tuning", "per 1K trained tokens"),
    ("batch_input_tokens", "Batch input tokens", "per 1K tokens"),
    ("batch_output_tokens", "Batch output tokens", "per 1K tokens"),
)
assert {unit for unit, _, _ in PRICE_UNITS} == set(UNITS)


def price_fields(form: FormData) -> tuple[dict[str, str], list[dict[str, str]]]:
    """A price form's `price_<unit>` fields: as typed (to show again) and as the API's components
    (a unit left empty has no price)."""
    typed = {unit: str(form.get(f"price_{unit}") or "").strip() for unit, _, _ in PRICE_UNITS}
    return typed, [{"unit": unit, "price": price} for unit, price in typed.items() if price]


@router.get("/pricebooks", name="console.pricebooks")
def pricebooks_page(
    request: Request,
    after: Annotated[str | None, Query(max_length=100)] = None,
    created: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    signed = signed_in(request)
    signed.principal.require(scope_rules.OPERATOR)
    return _page(request, signed, after=after, created=created)


@router.post("/pricebooks", name="console.admin.pricebooks.create")
async def create_pricebook(request: Request) -> Response:
    signed, form = await signed_form(request)
    signed.principal.require(scope_rules.OPERATOR)
    platform = platform_of(request)
    typed, components = price_fields(form)
    fields: dict[str, Any] = {
        "plan": str(form.get("plan") or "").strip() or "default",
        "monthly_fee": str(form.get("monthly_fee") or "").strip() or "0",
        "components": components,
    }

    def create() -> str:
        body = validated(schemas.PricebookCreate, fields)
        with platform.db.session() as session:
            book = pricebooks.create_pricebook(
                session, body, default_currency=platform.settings.currency, now=platform.clock.now()
            )
            return book.id

    try:
        book_id = await run_in_threadpool(create)
    except (errors.ValidationFailed, errors.Conflict) as exc:
        error = exc
    else:
        platform.metering.prices.invalidate()  # after the commit, as the API's route does
        platform.metering.limits.forget()
        return redirect(f"{PREFIX}/pricebooks?created={book_id}")
    shown = {**fields, "prices": typed}
    return await run_in_threadpool(
        lambda: _page(request, signed, form_error=error, form=shown, status=error.status)
    )


def _page(
    request: Request, signed: SignedIn, *, after: str | None = None, status: int = 200, **context: Any
) -> Response:
    platform = platform_of(request)
    with platform.db.read_session() as session:
        page = pricebooks.list_pricebooks(
            session, None, limit=platform.settings.default_page_limit, after=after
        )
    return render(
        request,
        "pricebooks.html",
        signed,
        status=status,
        page=page,
        after=after,
        price_units=PRICE_UNITS,
        currency=platform.settings.currency,
        **{"created": None, "form_error": None, "form": {}, **context},
    )
