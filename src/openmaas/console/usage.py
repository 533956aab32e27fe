"""Usage: charts by day, tables by model and by key, and a CSV download, with the filters of
`GET /v1/usage` (start, end, model, api_key_id). Everything is read through the hourly sums."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from openmaas.billing import usage_report as report
from openmaas.console.web import PREFIX, ConsoleRoute, parse_day, platform_of, render, signed_in
from openmaas.schemas import billing as schemas
from openmaas.tenancy import service as tenancy

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

_DEFAULT_DAYS = 30
_MAX_CHART_DAYS = 400  # a longer range is still summed, but drawn over its last 400 days
_TOKEN_UNITS = ("input_tokens", "output_tokens")

Day = Annotated[str | None, Query(max_length=40)]
Model = Annotated[str | None, Query(max_length=200)]
KeyId = Annotated[str | None, Query(max_length=40)]


@dataclass(frozen=True)
class Filters:
    start: str
    end: str
    model: str
    api_key_id: str

    def report(self) -> report.UsageFilter:
        end = parse_day(self.end, "end")
        return report.UsageFilter(
            start=parse_day(self.start, "start"),
            end=end + timedelta(days=1) if end else None,  # the end day is included
            model=self.model or None,
            api_key_id=self.api_key_id or None,
        )

    def query(self, **override: str) -> str:
        """These filters (with `override`) as a query string, for links and the CSV."""
        return urlencode({k: v for k, v in {**vars(self), **override}.items() if v})


def _filters(
    now: datetime, start: str | None, end: str | None, model: str | None, key: str | None
) -> Filters:
    today = now.astimezone(UTC).date()
    if start is None and end is None:
        start, end = (today - timedelta(days=_DEFAULT_DAYS - 1)).isoformat(), today.isoformat()
    return Filters(start or "", end or "", (model or "").strip(), (key or "").strip())


@router.get("/usage", name="console.usage")
def usage_page(
    request: Request, start: Day = None, end: Day = None, model: Model = None, api_key_id: KeyId = None
) -> Response:
    signed = signed_in(request)
    signed.principal.require("usage:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    filters = _filters(platform.clock.now(), start, end, model, api_key_id)
    where = filters.report()
    currency = platform.settings.currency
    with platform.db.read_session() as session:
        # One report by day, model and key: the charts and both tables sum its buckets (three
        # reports read the hourly sums three times).
        group_by = ["day", "model", "api_key_id"]
        usage = report.usage(session, org_id, where, group_by=group_by, currency=currency)
        key_names = tenancy.api_key_names(session, org_id, {b.api_key_id for b in usage.data})
    buckets = usage.data
    days = _days(filters, buckets)
    charts = [
        _chart("requests", "Requests per day", "requests", days, buckets, ("requests",)),
        _chart("tokens", "Tokens per day", "tokens", days, buckets, _TOKEN_UNITS),
        _chart("cost", f"Cost per day ({currency})", currency, days, buckets, None),
    ]
    return render(
        request,
        "usage.html",
        signed,
        filters=filters,
        charts=charts,
        empty=not buckets,
        by_model=_table(buckets, "model"),
        by_key=_table(buckets, "api_key_id", key_names),
        currency=currency,
        unpriced=usage.unpriced,
    )


@router.get("/usage.csv", name="console.usage_csv")
def usage_csv(
    request: Request, start: Day = None, end: Day = None, model: Model = None, api_key_id: KeyId = None
) -> Response:
    signed = signed_in(request)
    signed.principal.require("usage:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    filters = _filters(platform.clock.now(), start, end, model, api_key_id)
    currency = platform.settings.currency
    with platform.db.read_session() as session:
        rows = report.usage(
            session, org_id, filters.report(), group_by=["day", "model", "api_key_id"], currency=currency
        ).data
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["day", "model", "model_name", "api_key_id", "unit", "quantity", "cost", "currency", "events"]
    )
    for row in rows:
        assert isinstance(row, schemas.UsageBucket)
        writer.writerow(
            [row.day, row.model or "", row.model_name or "", row.api_key_id or "", row.unit, row.quantity,
             row.cost, currency, row.events]
        )  # fmt: skip
    name = f"usage-{filters.start or 'all'}-{filters.end or 'now'}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


def _days(filters: Filters, buckets: list[Any]) -> list[str]:
    """Every day of the range (so quiet days draw as zero), or of the data when open-ended."""
    seen = sorted({b.day for b in buckets if b.day})
    first = (
        date.fromisoformat(filters.start[:10])
        if filters.start
        else (date.fromisoformat(seen[0]) if seen else None)
    )
    last = (
        date.fromisoformat(filters.end[:10])
        if filters.end
        else (date.fromisoformat(seen[-1]) if seen else None)
    )
    if first is None or last is None or last < first:
        return seen
    first = max(first, last - timedelta(days=_MAX_CHART_DAYS - 1))
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _chart(
    name: str, title: str, unit: str, days: list[str], buckets: list[Any], units: tuple[str, ...] | None
) -> dict[str, Any]:
    """One chart's data for console.js: x in seconds (each day's UTC midnight), one series per
    unit (or the cost of all units when `units` is None)."""
    index = {day: i for i, day in enumerate(days)}
    labels = list(units) if units else ["cost"]
    series = {label: [0.0] * len(days) for label in labels}
    for bucket in buckets:
        i = index.get(bucket.day)
        if i is None:
            continue
        if units is None:
            series["cost"][i] += float(Decimal(bucket.cost))
        elif bucket.unit in series:
            series[bucket.unit][i] += bucket.quantity
    x = [int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) for day in days]
    return {
        "id": f"chart-{name}",
        "title": title,
        "unit": unit,
        "x": x,
        "days": days,
        "series": [{"label": label.replace("_", " "), "values": values} for label, values in series.items()],
    }


@dataclass
class Row:
    name: str
    id: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)


def _table(buckets: list[Any], column: str, names: dict[str, str] | None = None) -> list[Row]:
    rows: dict[str, Row] = {}
    for bucket in buckets:
        key = getattr(bucket, column) or ""
        name = (bucket.model_name if column == "model" else (names or {}).get(key)) or key or "—"
        row = rows.setdefault(key, Row(name, key))
        row.cost += Decimal(bucket.cost)
        if bucket.unit in ("requests", "input_tokens", "output_tokens"):
            setattr(row, bucket.unit, getattr(row, bucket.unit) + bucket.quantity)
    return sorted(rows.values(), key=lambda r: (r.cost, r.requests), reverse=True)
