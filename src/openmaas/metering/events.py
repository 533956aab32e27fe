"""What a billable act reports: a `UsageEvent` with quantities in integer base units (the units
are `openmaas.units`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from openmaas.units import RESOURCE_CLASSES, UNIT_SCALE, UNITS


# Not frozen: a frozen dataclass's __init__ costs ~2 µs, paid on every request; treat as immutable.
@dataclass(slots=True)
class Hold:
    """Budget reserved for one request before it ran; settled when its usage is written.

    `hold_id` names its row in `budget_holds` (None when nothing was held). With `lease`, the row
    is this server's lease the request was admitted against: settling deducts the request's cost
    from it. Without, the row is the request's own: settling deletes it, so a hold is released
    once, whether by its usage, by `release`, or by expiry after a crash.
    """

    org_id: str
    api_key_id: str | None
    org_micros: int
    key_micros: int
    hold_id: str | None = None
    lease: bool = False


# Not frozen: a frozen dataclass's __init__ costs ~2 µs, paid on every request; treat as immutable.
@dataclass(slots=True)
class UsageEvent:
    """One billable act. `event_id` is its idempotency key: the request id for inference, a
    deterministic key such as `job_…:interval:17` for training. Writing the same id twice meters
    once.

    `model` is an opaque model reference (`name:version`) until the model registry lands; the
    marketplace prices calls to a published reference by its owner's listing.
    """

    event_id: str
    org_id: str
    quantities: Mapping[str, int]
    occurred_at: datetime
    api_key_id: str | None = None
    model: str | None = None
    deployment: str | None = None
    resource_class: str | None = None
    hold: Hold | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.event_id or len(self.event_id) > 120:
            raise ValueError("event_id must be 1 to 120 characters")
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        if not self.quantities:
            raise ValueError("an event needs at least one quantity")
        for unit, quantity in self.quantities.items():
            if unit not in UNIT_SCALE:
                raise ValueError(f"unknown unit {unit!r}; choose from {list(UNITS)}")
            if not isinstance(quantity, int) or quantity < 0:
                raise ValueError(f"quantity of {unit!r} must be a non-negative integer")
        if "compute_ms" in self.quantities and self.resource_class not in RESOURCE_CLASSES:
            raise ValueError(f"compute_ms needs a resource_class in {list(RESOURCE_CLASSES)}")


class PricedLine(NamedTuple):
    """One unit of an event with its list cost and the price sheet (pricebook or listing) used.

    A named tuple, not a dataclass: every metered event builds one per unit, and this is cheaper."""

    unit: str
    quantity: int
    cost_micros: int
    price_ref: str | None
    seller_org_id: str | None = None
