"""Conversions between `Decimal` amounts, integer micro-units and the JSON decimal strings.

Rounding is always half up and always explicit, so a sum of rounded lines is reproducible.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICROS = 1_000_000
CENT_MICROS = 10_000
_MICRO = Decimal("0.000001")


def to_micros(amount: Decimal | str | int) -> int:
    """An amount (`"12.50"`, Decimal) as integer micro-units; more than 6 decimals is an error."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError) as exc:
        raise ValueError(f"not a decimal amount: {amount!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {amount!r}")
    scaled = value * MICROS
    if scaled != scaled.to_integral_value():
        raise ValueError(f"at most 6 decimal places: {amount!r}")
    return int(scaled)


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / MICROS).quantize(_MICRO)


def format_micros(micros: int, places: int = 2) -> str:
    """`12_500_000` → `"12.50"`; shows more places only when the amount has them."""
    whole, _, fraction = f"{from_micros(micros):f}".partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(places, '0')}"


def round_to_cents(micros: int) -> int:
    """Round micro-units to whole cents (half up, away from zero for negatives)."""
    sign = -1 if micros < 0 else 1
    return sign * ((abs(micros) + CENT_MICROS // 2) // CENT_MICROS) * CENT_MICROS


def scale_micros(rate_micros: int, quantity: int, per: int) -> int:
    """`rate_micros` per `per` units × `quantity` units, rounded half up to a micro-unit."""
    numerator = rate_micros * quantity
    if numerator >= 0:
        return (2 * numerator + per) // (2 * per)
    return -((-2 * numerator + per) // (2 * per))


def share_micros(amount_micros: int, basis_points: int) -> int:
    """`basis_points`/10_000 of an amount, rounded half up to whole cents."""
    return round_to_cents(scale_micros(amount_micros, basis_points, 10_000))
