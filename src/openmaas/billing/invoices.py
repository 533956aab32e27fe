"""Invoices: a calendar month of an organisation's usage in its own time zone, priced.

Usage is read from the ledger's hourly sums (`metering.usage_totals`), not its events. A month is
a draft while it runs (computed on request, never stored) and is finalised once it has
ended: the invoice is stored, prepaid credit is applied to it, its metered list cost leaves the
account's `unbilled` sum, and the owners of marketplace models used in it are credited their net
share. Included quantities and graduated tiers run over the month's cumulative quantity of each
price component; usage keeps the pricebook version that priced it, so a price change mid-month
gives one line per version.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.billing.credits import account_for, locked_account, post_transaction
from openmaas.billing.tables import Invoice, Listing, Pricebook
from openmaas.ids import new_id
from openmaas.metering.tables import BillingAccount
from openmaas.metering.usage_totals import usage_totals
from openmaas.pricing.money import format_micros, round_to_cents, share_micros, to_micros
from openmaas.pricing.periods import next_period, parse_period, period_bounds, period_of
from openmaas.pricing.sheets import PriceSheet, parse_components
from openmaas.schemas import billing as schemas
from openmaas.tenancy import service as tenancy
from openmaas.tenancy.tables import Organization


@dataclass(frozen=True, slots=True)
class _Sheet:
    ref: str
    starts: datetime
    version_label: str
    sheet: PriceSheet
    listing: Listing | None


@dataclass
class _Computed:
    invoice: schemas.Invoice
    list_cost_micros: int
    sales: list[dict[str, Any]]  # marketplace lines: who sold what, for how much (stored, internal)


def statement(session: Session, org_id: str, period: str, *, now: datetime, currency: str) -> schemas.Invoice:
    """The invoice for `period` (`YYYY-MM`): the stored one once finalised, else a draft."""
    try:
        parse_period(period)
    except ValueError as exc:
        raise errors.ValidationFailed(str(exc), param="period") from exc
    org = tenancy.get_organization(session, org_id)
    stored = session.scalar(select(Invoice).where(Invoice.org_id == org_id, Invoice.period == period))
    if stored is not None:
        invoice = schemas.Invoice.model_validate(stored.document["invoice"])
    else:
        invoice = _compute(session, org, period, currency).invoice
        account = session.get(BillingAccount, org_id)
        subtotal = to_micros(invoice.subtotal)
        credit = min(subtotal, max(account.balance_micros if account else 0, 0))
        invoice.credit_applied, invoice.amount_due = format_micros(credit), format_micros(subtotal - credit)
    return _with_sales(session, invoice, org_id, period)


def list_statements(session: Session, org_id: str, *, now: datetime, currency: str) -> list[schemas.Invoice]:
    """Every month from the organisation's first to the current one, newest first."""
    org = tenancy.get_organization(session, org_id)
    current = period_of(now, org.timezone)
    period = period_of(org.created_at, org.timezone)
    periods = []
    while period <= current:
        periods.append(period)
        period = next_period(period)
    return [statement(session, org_id, p, now=now, currency=currency) for p in reversed(periods)]


def finalize_due(
    session: Session, *, now: datetime, currency: str, ended_before: datetime | None = None
) -> list[str]:
    """Finalise every organisation's ended months that are not yet finalised; return invoice ids.

    `ended_before` (default `now`): only months that ended, in each organisation's time zone,
    before then (the scheduler leaves usage still in flight at the boundary time to land)."""
    created = []
    for org in list(session.scalars(select(Organization).order_by(Organization.id))):
        current = period_of(ended_before or now, org.timezone)
        if _first_unbilled(session, org) >= current:
            continue
        locked_account(session, org.id)  # a concurrent twin run finalises first; re-read after it
        period = _first_unbilled(session, org)
        while period < current:
            created.append(_finalize(session, org, period, now=now, currency=currency))
            period = next_period(period)
    return created


def _first_unbilled(session: Session, org: Organization) -> str:
    """The first month of `org` with no finalised invoice."""
    last = session.scalar(select(func.max(Invoice.period)).where(Invoice.org_id == org.id))
    return period_of(org.created_at, org.timezone) if last is None else next_period(last)


def _finalize(session: Session, org: Organization, period: str, *, now: datetime, currency: str) -> str:
    computed = _compute(session, org, period, currency)
    invoice = computed.invoice
    invoice_id = new_id("inv_")
    account = account_for(session, org.id)
    subtotal = to_micros(invoice.subtotal)
    credit = min(subtotal, max(account.balance_micros, 0))
    if credit:
        post_transaction(
            session,
            org.id,
            kind="invoice",
            amount_micros=-credit,
            now=now,
            reference=invoice_id,
            note=f"credit applied to the invoice for {period}",
        )
    session.execute(
        update(BillingAccount)
        .where(BillingAccount.org_id == org.id)
        .values(unbilled_micros=BillingAccount.unbilled_micros - computed.list_cost_micros)
    )
    for sale in computed.sales:
        if sale["net_micros"]:
            post_transaction(
                session,
                sale["seller_org_id"],
                kind="marketplace_revenue",
                amount_micros=sale["net_micros"],
                now=now,
                reference=invoice_id,
                note=f"{sale['model']} sold in {period}",
            )
    invoice.id, invoice.status, invoice.finalized_at = invoice_id, "finalized", now
    invoice.credit_applied, invoice.amount_due = format_micros(credit), format_micros(subtotal - credit)
    session.add(
        Invoice(
            id=invoice_id,
            org_id=org.id,
            period=period,
            currency=currency,
            document={"invoice": invoice.model_dump(mode="json"), "sales": computed.sales},
            total_micros=subtotal,
            finalized_at=now,
        )
    )
    session.flush()
    return invoice_id


def _compute(session: Session, org: Organization, period: str, currency: str) -> _Computed:
    start, end = period_bounds(period, org.timezone)
    totals = usage_totals(session, org.id, start=start, end=end, by=("price_ref", "resource_class", "model"))
    groups = [
        (ref, unit, resource_class, model, quantity, cost)
        for (ref, resource_class, model, unit), (quantity, cost, _) in totals.items()
    ]
    sheets = _sheets(session, {g[0] for g in groups if g[0] is not None})
    ordered = sorted(groups, key=lambda g: (sheets[g[0]].starts if g[0] in sheets else start, *_names(g[:4])))
    used: dict[tuple[Any, ...], int] = defaultdict(int)
    lines: list[schemas.InvoiceLine] = []
    sales: list[dict[str, Any]] = []
    list_cost = 0
    for ref, unit, resource_class, model, quantity, cost in ordered:
        quantity, list_cost = int(quantity), list_cost + int(cost)
        sheet = sheets.get(ref) if ref is not None else None
        component = None
        if sheet is not None:
            component = sheet.sheet.component_for(unit, resource_class, model)
        amount = 0
        if component is not None:
            family = (sheet.listing is not None, *component.key) if sheet is not None else ()
            before = used[family]
            used[family] += quantity
            amount = round_to_cents(component.graduated_cost(before, before + quantity))
        label = " · ".join(x for x in (unit, resource_class, model) if x)
        version = f" ({sheet.version_label})" if sheet is not None else ""
        lines.append(
            schemas.InvoiceLine(
                kind="usage",
                description=f"{label}{version}",
                unit=unit,
                model=model,
                resource_class=resource_class,
                quantity=quantity,
                included=component.included if component else None,
                amount=format_micros(amount),
                price_ref=ref,
            )
        )
        if sheet is not None and sheet.listing is not None:
            fee = share_micros(amount, sheet.listing.platform_share_bps)
            sales.append(
                {
                    "listing_id": sheet.listing.id,
                    "seller_org_id": sheet.listing.owner_org_id,
                    "model": sheet.listing.model,
                    "gross_micros": amount,
                    "fee_micros": fee,
                    "net_micros": amount - fee,
                }
            )
    fee_line = _plan_fee(session, org.plan, start, end)
    if fee_line is not None:
        lines.insert(0, fee_line)
    subtotal = sum(to_micros(line.amount) for line in lines)
    invoice = schemas.Invoice(
        id=None,
        organization_id=org.id,
        period=period,
        period_start=start,
        period_end=end,
        timezone=org.timezone,
        status="draft",
        currency=currency,
        lines=lines,
        subtotal=format_micros(subtotal),
        credit_applied="0.00",
        amount_due=format_micros(subtotal),
    )
    return _Computed(invoice, list_cost, sales)


def _names(group: tuple[str | None, ...]) -> tuple[str, ...]:
    """A group's (price sheet, unit, resource class, model), model first, as sortable text."""
    ref, unit, resource_class, model = group
    return model or "", unit or "", resource_class or "", ref or ""


def _plan_fee(session: Session, plan: str, start: datetime, end: datetime) -> schemas.InvoiceLine | None:
    book = session.scalar(
        select(Pricebook)
        .where(Pricebook.plan == plan, Pricebook.effective_from <= start)
        .order_by(Pricebook.effective_from.desc())
        .limit(1)
    ) or session.scalar(
        select(Pricebook)
        .where(Pricebook.plan == plan, Pricebook.effective_from < end)
        .order_by(Pricebook.effective_from)
        .limit(1)
    )
    if book is None or not book.monthly_fee_micros:
        return None
    return schemas.InvoiceLine(
        kind="plan_fee",
        description=f"plan {plan} (v{book.version}) monthly fee",
        amount=format_micros(round_to_cents(book.monthly_fee_micros)),
        price_ref=book.id,
    )


def _sheets(session: Session, refs: set[str]) -> dict[str, _Sheet]:
    sheets: dict[str, _Sheet] = {}
    for book in session.scalars(select(Pricebook).where(Pricebook.id.in_(refs))):
        sheets[book.id] = _Sheet(
            book.id,
            book.effective_from,
            f"{book.plan} v{book.version}",
            PriceSheet(book.id, book.currency, parse_components(book.components)),
            None,
        )
    for listing in session.scalars(select(Listing).where(Listing.id.in_(refs))):
        sheets[listing.id] = _Sheet(
            listing.id,
            listing.created_at,
            f"marketplace {listing.id}",
            PriceSheet(listing.id, listing.currency, parse_components(listing.components)),
            listing,
        )
    return sheets


def _with_sales(session: Session, invoice: schemas.Invoice, org_id: str, period: str) -> schemas.Invoice:
    """Add the sales of this organisation's listed models on other organisations' finalised months."""
    sales, net = [], 0
    for buyer in session.scalars(select(Invoice).where(Invoice.period == period)):
        for sale in buyer.document.get("sales", ()):
            if sale["seller_org_id"] != org_id:
                continue
            net += sale["net_micros"]
            sales.append(
                schemas.MarketplaceSale(
                    model=sale["model"],
                    listing_id=sale["listing_id"],
                    buyer_invoice_id=buyer.id,
                    gross=format_micros(sale["gross_micros"]),
                    platform_fee=format_micros(sale["fee_micros"]),
                    net=format_micros(sale["net_micros"]),
                )
            )
    invoice.marketplace_sales, invoice.marketplace_net_credited = sales, format_micros(net)
    return invoice
