"""Pricing one usage event at its list price, under the sheet in effect when it happened."""

from __future__ import annotations

from openmaas.metering.events import PricedLine, UsageEvent
from openmaas.pricing.source import PriceSource


def price_event(prices: PriceSource, event: UsageEvent) -> tuple[PricedLine, ...]:
    sheet = prices.sheet_for(event.org_id, event.model, event.occurred_at)
    if sheet is None:
        return tuple(PricedLine(unit, quantity, 0, None) for unit, quantity in event.quantities.items())
    ref, seller, model, resource_class = sheet.ref, sheet.seller_org_id, event.model, event.resource_class
    lines = []
    for unit, quantity in event.quantities.items():
        component = sheet.component_for(unit, resource_class, model)
        cost = component.list_cost(quantity) if component is not None else 0
        lines.append(PricedLine(unit, quantity, cost, ref, seller))
    return tuple(lines)


def worst_case_micros(prices: PriceSource, event: UsageEvent) -> int:
    """The list cost of `event` taken as an upper bound (the quantities are the maxima)."""
    return sum(line.cost_micros for line in price_event(prices, event))
