"""Pricing facts that metering and billing share: money in micro-units, billing periods (calendar
months in an organisation's time zone), price sheets, and the `PriceSource` protocol metering reads
prices, time zones and plan rate limits through.

Below metering and billing: imports only `openmaas.units`, `errors`, `clock` and the standard
library, never a table or a service.
"""
