"""Billing: pricebooks, prepaid credit, spending caps, invoices, the usage report and the model
marketplace. It reads metering's ledger and accounts; metering reaches billing's prices only
through the `PriceSource` (openmaas/pricing/source.py) that bootstrap passes it.

Money is `Decimal` in Python, integer micro-units (millionths of the currency unit) in the
database, and a decimal string with a `currency` in JSON (openmaas/pricing/money.py). Nothing here
uses floats.
"""
