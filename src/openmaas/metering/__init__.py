"""Metering: the append-only usage ledger, rate limits and budget reservations.

Serving and training call one function, `Platform.meter.record(UsageEvent(...))` (or, for
requests that are rate-limited and budget-checked, `Platform.gate.admit(...)` then
`Platform.gate.complete(...)`, which calls `record` itself).

Prices, billing months and plan rate limits come through a `PriceSource` passed in by bootstrap;
metering imports nothing from billing (billing sits above it).
"""
