"""Prepaid credit, spending caps and limit overrides: the operations behind `/v1/credits` and the
operator's billing routes. Every change to a wallet writes a `CreditTransaction`."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from openmaas import errors, logs
from openmaas.billing.tables import CreditTransaction
from openmaas.ids import new_id
from openmaas.metering.tables import BillingAccount, KeyBudget, RateLimitOverride
from openmaas.pagination import paginate
from openmaas.pricing.money import format_micros, to_micros
from openmaas.pricing.periods import period_of, zone
from openmaas.schemas import billing as schemas
from openmaas.schemas.pages import Page
from openmaas.tenancy import service as tenancy
from openmaas.tenancy.tables import Organization

log = logging.getLogger("openmaas.billing")


def account_for(session: Session, org_id: str) -> BillingAccount:
    """The organisation's account row, created (empty, postpaid, uncapped) on first use."""
    account = session.get(BillingAccount, org_id)
    if account is None:
        account = BillingAccount(
            org_id=org_id,
            balance_micros=0,
            prepaid=False,
            reserved_micros=0,
            period="",
            period_spend_micros=0,
            unbilled_micros=0,
        )
        session.add(account)
        session.flush()
    return account


def locked_account(session: Session, org_id: str) -> BillingAccount:
    """The organisation's account row, created if absent and locked until the transaction ends.

    Work that must happen once per organisation and month (finalising an invoice) takes this lock
    and then re-reads what is done: a twin run on another process waits for the first to commit and
    finds the work done, instead of colliding with it. (PostgreSQL's row lock; SQLite's write
    transactions are serial already.)"""
    session.execute(
        text(
            "INSERT INTO billing_accounts (org_id, balance_micros, prepaid, reserved_micros, period,"
            " period_spend_micros, unbilled_micros) VALUES (:org, 0, :prepaid, 0, '', 0, 0)"
            " ON CONFLICT (org_id) DO NOTHING"
        ),
        {"org": org_id, "prepaid": False},
    )
    query = select(BillingAccount).where(BillingAccount.org_id == org_id).with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one()


def post_transaction(
    session: Session,
    org_id: str,
    *,
    kind: str,
    amount_micros: int,
    now: datetime,
    actor_key_id: str | None = None,
    reference: str | None = None,
    note: str | None = None,
) -> CreditTransaction:
    """Move the wallet by `amount_micros` with one atomic UPDATE, and record it."""
    account_for(session, org_id)
    session.execute(
        update(BillingAccount)
        .where(BillingAccount.org_id == org_id)
        .values(balance_micros=BillingAccount.balance_micros + amount_micros)
    )
    balance = session.scalar(select(BillingAccount.balance_micros).where(BillingAccount.org_id == org_id))
    entry = CreditTransaction(
        id=new_id("ctx_"),
        org_id=org_id,
        kind=kind,
        amount_micros=amount_micros,
        balance_after_micros=int(balance or 0),
        created_at=now,
        actor_key_id=actor_key_id,
        reference=reference,
        note=note,
    )
    session.add(entry)
    session.flush()
    logs.event_after_commit(
        session,
        log,
        "credit_transaction",
        transaction_id=entry.id,
        org_id=org_id,
        kind=kind,
        amount=format_micros(amount_micros),
        balance_after=format_micros(entry.balance_after_micros),
        reference=reference,
        actor_key_id=actor_key_id,
    )
    return entry


def top_up(
    session: Session,
    org_id: str,
    body: schemas.CreditTopUp,
    *,
    actor_key_id: str,
    now: datetime,
    currency: str,
) -> schemas.CreditTransaction:
    amount = to_micros(body.amount)
    if amount <= 0:
        raise errors.ValidationFailed("amount must be greater than 0.", param="amount")
    tenancy.get_organization(session, org_id)
    entry = post_transaction(
        session,
        org_id,
        kind="top_up",
        amount_micros=amount,
        now=now,
        actor_key_id=actor_key_id,
        note=body.note,
    )
    return transaction_public(entry, currency)


def transaction_public(entry: CreditTransaction, currency: str) -> schemas.CreditTransaction:
    return schemas.CreditTransaction(
        id=entry.id,
        kind=entry.kind,
        amount=format_micros(entry.amount_micros),
        balance_after=format_micros(entry.balance_after_micros),
        currency=currency,
        created_at=entry.created_at,
        reference=entry.reference,
        note=entry.note,
    )


def list_transactions(
    session: Session, org_id: str, currency: str, *, limit: int, after: str | None, kind: str | None = None
) -> Page[schemas.CreditTransaction]:
    """The wallet's ledger, a page at a time; with `kind`, only those entries (such as
    `marketplace_revenue`: a seller's earnings, credited as each buyer's month is finalised)."""
    query = select(CreditTransaction).where(CreditTransaction.org_id == org_id)
    if kind is not None:
        query = query.where(CreditTransaction.kind == kind)
    return paginate(
        session,
        query,
        CreditTransaction.id,
        limit=limit,
        after=after,
        to_public=lambda entry: transaction_public(entry, currency),
    )


def credits(session: Session, org_id: str, currency: str, now: datetime) -> schemas.Credits:
    org = tenancy.get_organization(session, org_id)
    account = session.get(BillingAccount, org_id)
    period = period_of(now, org.timezone)
    balance = account.balance_micros if account else 0
    unbilled = account.unbilled_micros if account else 0
    reserved = account.reserved_micros if account else 0
    spend = account.period_spend_micros if account and account.period == period else 0
    cap = account.monthly_cap_micros if account else None
    return schemas.Credits(
        organization_id=org_id,
        currency=currency,
        balance=format_micros(balance),
        unbilled=format_micros(unbilled),
        reserved=format_micros(reserved),
        available=format_micros(balance - unbilled - reserved),
        prepaid=bool(account and account.prepaid),
        monthly_cap=format_micros(cap) if cap is not None else None,
        period=period,
        period_spend=format_micros(spend),
    )


def update_settings(
    session: Session, org_id: str, body: schemas.BillingSettings, currency: str, now: datetime
) -> schemas.Credits:
    org = tenancy.get_organization(session, org_id)
    account = account_for(session, org_id)
    if body.timezone is not None:
        try:
            zone(body.timezone)
        except ValueError as exc:
            raise errors.ValidationFailed(str(exc), param="timezone") from exc
        org.timezone = body.timezone
    if body.prepaid is not None:
        account.prepaid = body.prepaid
    if body.clear_monthly_cap:
        account.monthly_cap_micros = None
    elif body.monthly_cap is not None:
        account.monthly_cap_micros = to_micros(body.monthly_cap)
    session.flush()
    return credits(session, org_id, currency, now)


def set_key_budget(
    session: Session, org_id: str, key_id: str, body: schemas.KeyBudgetUpdate, currency: str, now: datetime
) -> schemas.KeyBudget:
    tenancy.get_api_key(session, org_id, key_id)
    budget = session.get(KeyBudget, key_id)
    if budget is None:
        budget = KeyBudget(key_id=key_id, org_id=org_id, reserved_micros=0, period="", period_spend_micros=0)
        session.add(budget)
    budget.monthly_cap_micros = to_micros(body.monthly_cap) if body.monthly_cap is not None else None
    session.flush()
    return key_budget_public(session, budget, currency, now)


def key_budget_public(session: Session, budget: KeyBudget, currency: str, now: datetime) -> schemas.KeyBudget:
    org = session.get(Organization, budget.org_id)
    period = period_of(now, org.timezone if org else "UTC")
    spend = budget.period_spend_micros if budget.period == period else 0
    cap = budget.monthly_cap_micros
    return schemas.KeyBudget(
        key_id=budget.key_id,
        monthly_cap=format_micros(cap) if cap is not None else None,
        period=period,
        period_spend=format_micros(spend),
        currency=currency,
    )


def set_rate_limits(
    session: Session, org_id: str, subject_id: str, body: schemas.RateLimits
) -> schemas.RateLimitsPublic:
    """Override the plan's limits for the organisation (`subject_id == org_id`) or one of its keys."""
    if subject_id != org_id:
        tenancy.get_api_key(session, org_id, subject_id)
    row = session.get(RateLimitOverride, subject_id)
    if row is None:
        row = RateLimitOverride(subject_id=subject_id, org_id=org_id)
        session.add(row)
    row.requests_per_minute = body.requests_per_minute
    row.tokens_per_minute = body.tokens_per_minute
    session.flush()
    return schemas.RateLimitsPublic(
        subject_id=subject_id,
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
    )
