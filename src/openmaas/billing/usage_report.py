"""`GET /v1/usage`: an organisation's usage summed by unit and by day, model, deployment or key,
or listed event by event. Days are calendar days in the organisation's time zone.

Sums are read from the ledger's hourly sums (`metering.usage_totals`), never from a scan of the
events, and are always per unit: a request and a row are not one quantity. Single events are read
from the ledger a page at a time, newest first, along its (organisation, time) index.

A model is shown by name: `name:version` for the organisation's own versions; for another
organisation's model used through the marketplace, the listing (`lst_…`), which is all its
listing shows of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.billing.tables import Listing
from openmaas.metering.tables import UsageRecord
from openmaas.metering.usage_totals import usage_totals
from openmaas.pricing.money import format_micros
from openmaas.pricing.periods import zone
from openmaas.registry import service as registry
from openmaas.registry.tables import ModelVersion, RegisteredModel
from openmaas.schemas import billing as schemas
from openmaas.tenancy import service as tenancy
from openmaas.units import UNITS

GROUPS = ("day", "model", "deployment", "api_key_id", "resource_class", "unit")


@dataclass(frozen=True, slots=True)
class UsageFilter:
    start: datetime | None = None
    end: datetime | None = None
    model: str | None = None
    api_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class UsageSums:
    """A report's sums before they are shaped: `keys` names each key's parts (day, the columns,
    unit), `sums` maps keys to [quantity, cost in micros, events]; `unpriced`: some usage was
    metered while no price applied."""

    keys: list[str]
    sums: dict[tuple[Any, ...], list[int]]
    unpriced: bool


def usage_sums(session: Session, org_id: str, where: UsageFilter, *, group_by: Sequence[str]) -> UsageSums:
    """Usage summed per unit and per the `group_by` columns, as plain numbers (what pages that
    draw or total a large report read, without a bucket object per row)."""
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise errors.ValidationFailed(
            f"group_by: unknown {unknown}; choose from {list(GROUPS)}", param="group_by"
        )
    org = tenancy.get_organization(session, org_id)
    where = _resolved(session, org_id, where)
    columns = list(dict.fromkeys(g for g in group_by if g not in ("day", "unit")))
    by_day = "day" in group_by
    totals = usage_totals(
        session,
        org_id,
        start=where.start,
        end=where.end,
        by=(*columns, "price_ref"),  # only to tell whether a price applied; summed over below
        where=_dimensions(where),
        days=zone(org.timezone) if by_day else None,
    )
    sums: dict[tuple[Any, ...], list[int]] = {}
    unpriced = False
    n = len(columns)
    for key, (quantity, cost, events) in totals.items():  # (*columns, price_ref, unit[, day])
        unpriced = unpriced or key[n] is None
        total = sums.setdefault((*key[n + 2 :], *key[:n], key[n + 1]), [0, 0, 0])
        total[0] += quantity
        total[1] += cost
        total[2] += events
    return UsageSums(["day"] * by_day + columns + ["unit"], sums, unpriced)


def usage(
    session: Session,
    org_id: str,
    where: UsageFilter,
    *,
    group_by: Sequence[str],
    currency: str,
) -> schemas.UsageReport:
    """Usage summed per unit and per the `group_by` columns; sorted by day, the columns, unit."""
    found = usage_sums(session, org_id, where, group_by=group_by)
    labels = found.keys
    rows = [
        (dict(zip(labels, key, strict=True)), total) for key, total in sorted(found.sums.items(), key=_order)
    ]
    names = model_names(session, org_id, (fields.get("model") for fields, _ in rows))
    buckets = [
        schemas.UsageBucket(
            **fields,
            model_name=names.get(fields.get("model") or ""),
            quantity=quantity,
            cost=format_micros(cost),
            events=events,
        )
        for fields, (quantity, cost, events) in rows
    ]
    return schemas.UsageReport(currency=currency, granularity="bucket", data=buckets, unpriced=found.unpriced)


def events(
    session: Session,
    org_id: str,
    where: UsageFilter,
    *,
    currency: str,
    limit: int,
    after: str | None,
) -> schemas.UsageReport:
    """Single ledger lines (an event's units), newest first; `after` is the previous page's
    `last_id`. Reads `limit` + 2 events along the (organisation, time) index: each has a line at
    least, and the first may be the previous page's last, partly shown."""
    where = _resolved(session, org_id, where)
    conditions = [UsageRecord.org_id == org_id]
    if where.start is not None:
        conditions.append(UsageRecord.occurred_at >= where.start)
    if where.end is not None:
        conditions.append(UsageRecord.occurred_at < where.end)
    if where.model is not None:
        conditions.append(UsageRecord.model == where.model)
    if where.api_key_id is not None:
        conditions.append(UsageRecord.api_key_id == where.api_key_id)
    cursor = _Cursor.parse(after) if after is not None else None
    if cursor is not None:
        conditions.append(UsageRecord.occurred_at <= cursor.occurred_at)
        conditions.append(
            or_(
                UsageRecord.occurred_at < cursor.occurred_at,
                and_(UsageRecord.occurred_at == cursor.occurred_at, UsageRecord.seq <= cursor.seq),
            )
        )
    query = (
        select(UsageRecord)
        .where(*conditions)
        .order_by(UsageRecord.occurred_at.desc(), UsageRecord.seq.desc())
        .limit(limit + 2)
    )
    records = session.scalars(query).all()
    names = model_names(session, org_id, (r.model for r in records))
    lines: list[tuple[_Cursor, schemas.UsageEventPublic]] = []
    for record in records:
        for index in reversed(range(len(UNITS))):
            unit = UNITS[index]
            quantity = getattr(record, f"qty_{unit}")
            here = _Cursor(record.occurred_at, record.seq, index)
            if quantity is None or (cursor is not None and not here.after(cursor)):
                continue
            line = schemas.UsageEventPublic(
                request_id=record.event_id,
                unit=unit,
                quantity=quantity,
                cost=format_micros(getattr(record, f"cost_{unit}") or 0),
                occurred_at=record.occurred_at,
                model=record.model,
                model_name=names.get(record.model or ""),
                deployment=record.deployment,
                api_key_id=record.api_key_id,
                resource_class=record.resource_class,
            )
            lines.append((here, line))
    page = lines[:limit]
    return schemas.UsageReport(
        currency=currency,
        granularity="event",
        data=[line for _, line in page],
        has_more=len(lines) > limit,
        last_id=str(page[-1][0]) if page else None,
    )


def _order(item: tuple[tuple[Any, ...], list[int]]) -> list[str]:
    return [str(value) for value in item[0]]


@dataclass(frozen=True, slots=True)
class _Cursor:
    """Where a page of lines ended: an event (its time and ledger sequence) and a unit's index
    (an event's lines come in descending unit index)."""

    occurred_at: datetime
    seq: int
    unit_index: int

    _FORMAT = re.compile(r"^(\d{1,19})\.(\d{1,19})\.(\d{1,2})$")

    @classmethod
    def parse(cls, text: str) -> _Cursor:
        match = cls._FORMAT.match(text)
        if match is None or int(match.group(3)) >= len(UNITS):
            raise errors.ValidationFailed("after: not a cursor from this list", param="after")
        try:
            at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(match.group(1)))
        except OverflowError:
            raise errors.ValidationFailed("after: not a cursor from this list", param="after") from None
        return cls(at, int(match.group(2)), int(match.group(3)))

    def after(self, other: _Cursor) -> bool:
        """Whether this line comes after `other` in the list (newest first)."""
        mine = (self.occurred_at, self.seq, self.unit_index)
        return mine < (other.occurred_at, other.seq, other.unit_index)

    def __str__(self) -> str:
        micros = (self.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        return f"{micros}.{self.seq}.{self.unit_index}"


def _resolved(session: Session, org_id: str, where: UsageFilter) -> UsageFilter:
    """`model` given as one of the organisation's own versions (`name:version`, `name@alias`)
    filters by that version's id, which usage carries; any other value is taken as it is."""
    ref = where.model
    if ref is None or not (":" in ref or "@" in ref):
        return where
    try:
        _, version = registry.resolve(session, org_id, ref)
    except (errors.NotFound, errors.ValidationFailed):
        return where
    return replace(where, model=version.id)


def _dimensions(where: UsageFilter) -> dict[str, str]:
    return {
        name: value
        for name, value in (("model", where.model), ("api_key_id", where.api_key_id))
        if value is not None
    }


def model_names(session: Session, org_id: str, models: Iterable[str | None]) -> dict[str, str]:
    """Display names of the models usage names (version ids): `name:version` for `org_id`'s own
    versions, the listing for another organisation's listed version; none for the rest (a deleted
    version, a reference that is not a version id)."""
    wanted = {model for model in models if model}
    if not wanted:
        return {}
    own = session.execute(
        select(ModelVersion.id, RegisteredModel.name, ModelVersion.version)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.id.in_(wanted), ModelVersion.org_id == org_id)
    )
    names = {version_id: f"{name}:{version}" for version_id, name, version in own}
    others = wanted - set(names)
    if others:
        listed = session.execute(
            select(Listing.model, Listing.id)
            .where(Listing.model.in_(others), Listing.owner_org_id != org_id)
            .order_by(Listing.created_at)
        )
        names.update({model: listing_id for model, listing_id in listed})  # the latest of each
    return names
