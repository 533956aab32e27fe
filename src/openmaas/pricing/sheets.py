"""Price sheets and the arithmetic of prices: list cost per event, and graduated cost over a month.

A price sheet is a pricebook version (a plan's prices from `effective_from`) or a marketplace
listing (an owner's price for one model). A component prices one unit, optionally only for one
resource class or one model (a per-model override); the most specific match wins.

Included quantities and graduated tiers run over a calendar month's cumulative quantity, so they
are applied by invoices; the list cost stored with each event uses the first paid rate, which is
an upper bound whenever tiers get cheaper, and is what budgets are checked against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openmaas.pricing.money import scale_micros
from openmaas.units import BATCH_DEFAULT_PERCENT, BATCH_UNITS, UNIT_SCALE

_LIVE_UNIT = {batch: live for live, batch in BATCH_UNITS.items()}


@dataclass(frozen=True, slots=True)
class Tier:
    up_to: int | None  # billable quantity (after the included one) where this tier ends; None: no end
    rate_micros: int


@dataclass(frozen=True, slots=True)
class Component:
    unit: str
    rate_micros: int
    resource_class: str | None = None
    model: str | None = None
    included: int = 0
    tiers: tuple[Tier, ...] = ()

    @property
    def per(self) -> int:
        return UNIT_SCALE[self.unit]

    @property
    def list_rate_micros(self) -> int:
        return self.tiers[0].rate_micros if self.tiers else self.rate_micros

    def list_cost(self, quantity: int) -> int:
        return scale_micros(self.list_rate_micros, quantity, self.per)

    def graduated_cost(self, start: int, end: int) -> int:
        """Cost of the month's cumulative quantity range [start, end): included first, then tiers."""
        numerator = 0
        for low, high, rate in self._bands():
            overlap = min(end, high) - max(start, low) if high is not None else end - max(start, low)
            if overlap > 0:
                numerator += overlap * rate
        return scale_micros(1, numerator, self.per)

    def _bands(self) -> list[tuple[int, int | None, int]]:
        bands: list[tuple[int, int | None, int]] = []
        if self.included:
            bands.append((0, self.included, 0))
        if not self.tiers:
            bands.append((self.included, None, self.rate_micros))
            return bands
        low = self.included
        for tier in self.tiers:
            high = None if tier.up_to is None else self.included + tier.up_to
            bands.append((low, high, tier.rate_micros))
            if high is None:
                break
            low = high
        return bands

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "rate_micros": self.rate_micros,
            "resource_class": self.resource_class,
            "model": self.model,
            "included": self.included,
            "tiers": [{"up_to": t.up_to, "rate_micros": t.rate_micros} for t in self.tiers],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Component:
        return cls(
            unit=data["unit"],
            rate_micros=int(data["rate_micros"]),
            resource_class=data.get("resource_class"),
            model=data.get("model"),
            included=int(data.get("included") or 0),
            tiers=tuple(Tier(t.get("up_to"), int(t["rate_micros"])) for t in data.get("tiers") or ()),
        )

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        return (self.unit, self.resource_class, self.model)


@dataclass(frozen=True, slots=True)
class PriceSheet:
    ref: str  # the pricebook or listing id stored with each event it priced
    currency: str
    components: tuple[Component, ...]
    seller_org_id: str | None = None  # set for marketplace listings
    platform_share_bps: int = 0
    # Looked-up components by (unit, class, model): every metered event asks, so answer from memory.
    _memo: dict[tuple[str, str | None, str | None], Component | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def component_for(self, unit: str, resource_class: str | None, model: str | None) -> Component | None:
        key = (unit, resource_class, model)
        if key in self._memo:
            return self._memo[key]
        best = self._best(unit, resource_class, model)
        if len(self._memo) < 10_000:
            self._memo[key] = best
        return best

    def _best(self, unit: str, resource_class: str | None, model: str | None) -> Component | None:
        best = self._named(unit, resource_class, model)
        live = _LIVE_UNIT.get(unit)
        if best is None and live is not None:
            # A batch unit the sheet does not price: its live unit's price, discounted.
            priced = self._named(live, resource_class, model)
            if priced is not None:
                best = _discounted(priced, unit)
        return best

    def _named(self, unit: str, resource_class: str | None, model: str | None) -> Component | None:
        best: Component | None = None
        best_score = -1
        for component in self.components:
            if component.unit != unit:
                continue
            if component.resource_class is not None and component.resource_class != resource_class:
                continue
            if component.model is not None and component.model != model:
                continue
            score = (2 if component.model is not None else 0) + (1 if component.resource_class else 0)
            if score > best_score:
                best, best_score = component, score
        return best


def _discounted(live: Component, unit: str) -> Component:
    """`live`'s prices at `BATCH_DEFAULT_PERCENT`, for `unit` (its included quantity not shared)."""

    def cut(rate: int) -> int:
        return rate * BATCH_DEFAULT_PERCENT // 100

    tiers = tuple(Tier(t.up_to, cut(t.rate_micros)) for t in live.tiers)
    return Component(unit, cut(live.rate_micros), live.resource_class, live.model, 0, tiers)


def parse_components(data: Iterable[Mapping[str, Any]]) -> tuple[Component, ...]:
    return tuple(Component.from_json(item) for item in data)


def validate_components(components: Sequence[Component]) -> None:
    """Raise ValueError naming the problem: unknown units, unsorted tiers, duplicate components."""
    seen: set[tuple[str, str | None, str | None]] = set()
    for index, component in enumerate(components):
        if component.unit not in UNIT_SCALE:
            raise ValueError(f"components[{index}].unit: unknown unit {component.unit!r}")
        if component.key in seen:
            raise ValueError(f"components[{index}]: a second price for the same unit, class and model")
        seen.add(component.key)
        if component.rate_micros < 0 or component.included < 0:
            raise ValueError(f"components[{index}]: prices and included quantities must be >= 0")
        last = 0
        for position, tier in enumerate(component.tiers):
            final = position == len(component.tiers) - 1
            if tier.rate_micros < 0:
                raise ValueError(f"components[{index}].tiers[{position}]: price must be >= 0")
            if tier.up_to is None and not final:
                raise ValueError(f"components[{index}].tiers[{position}]: only the last tier is open-ended")
            if tier.up_to is not None and tier.up_to <= last:
                raise ValueError(f"components[{index}].tiers[{position}].up_to must increase")
            last = tier.up_to or last
        if component.tiers and component.tiers[-1].up_to is not None:
            raise ValueError(f"components[{index}].tiers: the last tier must be open-ended (up_to null)")
