"""Price arithmetic: money conversions, list cost, included quantities and graduated tiers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from openmaas.pricing.money import format_micros, round_to_cents, scale_micros, share_micros, to_micros
from openmaas.pricing.sheets import Component, PriceSheet, Tier, validate_components


def test_amounts_are_exact_decimals_never_floats() -> None:
    assert to_micros("12.50") == 12_500_000
    assert to_micros(Decimal("0.000001")) == 1
    assert format_micros(12_500_000) == "12.50"
    assert format_micros(1) == "0.000001"
    assert format_micros(-3_000_000) == "-3.00"
    with pytest.raises(ValueError, match="6 decimal"):
        to_micros("0.0000001")
    with pytest.raises(ValueError):
        to_micros("NaN")


def test_rounding_is_half_up_and_explicit() -> None:
    assert scale_micros(500, 1, 1000) == 1  # 0.5 micro rounds up
    assert scale_micros(499, 1, 1000) == 0
    assert round_to_cents(5_000) == 10_000 and round_to_cents(4_999) == 0
    assert share_micros(10_010_000, 2_000) == 2_000_000  # 20% of 10.01 = 2.002 → 2.00


def test_list_cost_per_1k_tokens() -> None:
    component = Component("input_tokens", rate_micros=to_micros("0.50"))
    assert component.list_cost(2_500) == 1_250_000


def test_included_quantity_is_free_then_the_rate_applies() -> None:
    component = Component("requests", rate_micros=to_micros("0.01"), included=100)
    assert component.graduated_cost(0, 100) == 0
    assert component.graduated_cost(0, 150) == 500_000
    # split across two ranges, the sum is the same
    assert component.graduated_cost(0, 80) + component.graduated_cost(80, 150) == 500_000


def test_graduated_tiers_price_each_band_at_its_rate() -> None:
    component = Component(
        "output_tokens",
        rate_micros=0,
        included=1_000,
        tiers=(Tier(10_000, to_micros("2.00")), Tier(None, to_micros("1.00"))),
    )
    # 1,000 free, 10,000 at 2.00/1K = 20.00, then 5,000 at 1.00/1K = 5.00
    assert component.graduated_cost(0, 16_000) == 25_000_000
    assert component.graduated_cost(0, 6_000) + component.graduated_cost(6_000, 16_000) == 25_000_000
    assert component.list_cost(1_000) == 2_000_000  # list price: the first paid tier


def test_the_most_specific_component_wins() -> None:
    generic = Component("requests", rate_micros=1)
    gpu = Component("compute_ms", rate_micros=2, resource_class="gpu")
    cpu = Component("compute_ms", rate_micros=3)
    override = Component("requests", rate_micros=4, model="llama:2")
    sheet = PriceSheet("pb_1", "USD", (generic, gpu, cpu, override))
    assert sheet.component_for("requests", None, "llama:2") is override
    assert sheet.component_for("requests", None, "other:1") is generic
    assert sheet.component_for("compute_ms", "gpu", None) is gpu
    assert sheet.component_for("compute_ms", "cpu", None) is cpu
    assert sheet.component_for("rows", None, None) is None


def test_batch_tokens_cost_half_the_live_price_unless_priced_apart() -> None:
    live_in = Component("input_tokens", rate_micros=1_000, tiers=(Tier(10_000, 1_000), Tier(None, 600)))
    live_out = Component("output_tokens", rate_micros=3_000, included=5_000)
    batch_out = Component("batch_output_tokens", rate_micros=100)
    sheet = PriceSheet("pb_1", "USD", (live_in, live_out, batch_out))
    batch_in = sheet.component_for("batch_input_tokens", None, None)
    assert batch_in is not None and batch_in.unit == "batch_input_tokens"
    assert batch_in.list_cost(2_000) == live_in.list_cost(2_000) // 2
    assert [t.rate_micros for t in batch_in.tiers] == [500, 300] and batch_in.included == 0
    assert sheet.component_for("batch_output_tokens", None, None) is batch_out  # an operator's own price
    assert PriceSheet("pb_2", "USD", (batch_out,)).component_for("batch_input_tokens", None, None) is None


@pytest.mark.parametrize(
    ("components", "message"),
    [
        ([Component("bogus", 1)], "unknown unit"),
        ([Component("rows", 1), Component("rows", 2)], "second price"),
        ([Component("rows", 0, tiers=(Tier(10, 1), Tier(5, 1), Tier(None, 1)))], "must increase"),
        ([Component("rows", 0, tiers=(Tier(10, 1),))], "open-ended"),
    ],
)
def test_invalid_components_are_refused(components: list[Component], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_components(components)
