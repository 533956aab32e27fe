"""Instants a request names (a key's `expires_at`, a pricebook's `effective_from`, a usage report's
`start` and `end`): an RFC 3339 date-time with its time zone, as the OpenAPI document's
`format: date-time` says. Pydantic alone would also take a number of seconds or a date-time
without a zone, which the database's UTC columns cannot place.

An instant before 1970 or after 9000 is taken as that bound: nothing the platform holds lies
outside them, so a filter, an expiry or a price's start means the same, and the arithmetic on
them (an hour before, a month on, a local day) stays inside the calendar."""

from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


def _not_a_number(value: Any) -> Any:
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("expected a date-time such as 2027-01-01T00:00:00Z")
    return value


def _in_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a time zone, e.g. 2027-01-01T00:00:00Z")
    try:
        return min(max(value.astimezone(UTC), EARLIEST), LATEST)
    except OverflowError:  # within hours of year 1 or 9999
        return EARLIEST if value.year == 1 else LATEST


Instant = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_in_utc)]
# A billing period, `YYYY-MM`: years whose local months every time zone can place in UTC.
PERIOD_PATTERN = r"^([1-8][0-9]{3})-(0[1-9]|1[0-2])$"


@functools.cache
def time_zones() -> frozenset[str]:
    """The IANA time zone names this machine knows (read once: the scan takes milliseconds)."""
    return frozenset(zoneinfo.available_timezones())


def _known_zone(value: str) -> str:
    if value not in time_zones():
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin'")
    return value


def _listed_zones(schema: dict[str, Any]) -> None:
    schema["enum"] = sorted(time_zones())


# An organisation's time zone (its billing months), one of the IANA names the document lists.
TimeZone = Annotated[str, AfterValidator(_known_zone), Field(json_schema_extra=_listed_zones)]
