"""Billing: pricebooks, prepaid credit, spending caps, invoices and the model marketplace.

Money is `Decimal` in Python, integer micro-units (millionths of the currency unit) in the
database, and a decimal string with a `currency` in JSON. Nothing here uses floats.
"""
