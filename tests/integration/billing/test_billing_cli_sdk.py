"""The billing commands and SDK methods against a real server: an operator adds credit and prices,
a tenant reads usage, credits and invoices, publishes to the marketplace, and downloads a CSV."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from openmaas import AsyncClient, Client
from openmaas.cli.main import app
from openmaas.schemas.billing import PricebookCreate, PriceComponentIn
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_version, meter
from tests.support.served import Served


def _cli(served: Served, key: str, *args: str) -> str:
    env = {"OPENMAAS_URL": served.url, "OPENMAAS_API_KEY": key, "OPENMAAS_CONFIG_DIR": "/nonexistent"}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_sdk_and_cli_cover_credits_prices_usage_and_invoices(
    clocked_served: tuple[Served, Clocked], tmp_path: Path
) -> None:
    served, clocked = clocked_served
    acme = served.tenant("acme")
    with Client(served.url, served.admin_key) as operator:
        book = operator.admin.billing.create_pricebook(
            PricebookCreate(components=[PriceComponentIn(unit="requests", price="0.40")], monthly_fee="1.00")
        )
        assert (book.version, book.components[0].price) == (1, "0.40")
        assert [b.id for b in operator.admin.billing.pricebooks().data] == [book.id]
        assert operator.admin.billing.update("acme", timezone="Asia/Tokyo").prepaid is False
    added = _cli(served, served.admin_key, "admin", "credits", "add", "5.00", "--org", "acme", "--json")
    assert json.loads(added)["balance_after"] == "5.00"
    clocked.move_to(datetime(2026, 11, 24, tzinfo=UTC))
    meter(clocked.platform, "r1", acme.org_id, clocked.clock.now(), {"requests": 3}, model="m:1")
    usage = json.loads(_cli(served, acme.key, "usage", "--group-by", "model", "--json"))
    assert [(u["model"], u["quantity"], u["cost"]) for u in usage] == [("m:1", 3, "1.20")]
    with Client(served.url, acme.key) as tenant:
        assert tenant.credits().balance == "5.00"
        assert tenant.invoices.get("2026-11").subtotal == "2.20"  # fee 1.00 + 3 × 0.40
        make_version(clocked.platform, acme.org_id, "m")
        listing = tenant.marketplace.publish("m:1", [{"unit": "requests", "price": "0.05"}])
    catalogue = json.loads(_cli(served, acme.key, "marketplace", "list", "--json"))
    assert [item["id"] for item in catalogue] == [listing.id]
    target = tmp_path / "november.csv"
    _cli(served, acme.key, "invoices", "download", "2026-11", "-o", str(target))
    assert target.read_text().splitlines()[-1] == "2026-11,amount_due,,,,,,,0.00,USD"  # credit covers it

    async def tenant_async() -> tuple[str, int]:
        async with AsyncClient(served.url, acme.key) as tenant:
            events = await tenant.usage(granularity="event")
            return (await tenant.credits()).period, len(events.data)

    assert asyncio.run(tenant_async()) == ("2026-11", 1)


def test_usage_command_shows_names_units_apart_and_says_when_nothing_was_priced(
    clocked_served: tuple[Served, Clocked],
) -> None:
    served, clocked = clocked_served
    acme = served.tenant("acme")
    version = make_version(clocked.platform, acme.org_id, "cancer")
    clocked.move_to(datetime(2026, 11, 24, tzinfo=UTC))
    meter(
        clocked.platform, "r1", acme.org_id, clocked.clock.now(), {"requests": 2, "rows": 260}, model=version
    )
    table = _cli(served, acme.key, "usage", "--group-by", "model")
    assert "cancer:1" in table and version not in table
    rows = [line for line in table.splitlines() if "cancer:1" in line]
    assert len(rows) == 2 and any("requests" in r and " 2 " in r for r in rows)  # not 262 in one row
    assert any("rows" in r and " 260 " in r for r in rows)
    assert "openmaas admin pricebooks create" in table  # every cost is 0: no price applied
    assert version not in _cli(served, acme.key, "usage", "--events")
    with Client(served.url, served.admin_key) as operator:
        operator.admin.billing.create_pricebook(
            PricebookCreate(components=[PriceComponentIn(unit="requests", price="0.40")])
        )
    meter(clocked.platform, "r2", acme.org_id, clocked.clock.now(), {"requests": 1}, model=version)
    priced = _cli(served, acme.key, "usage", "--start", "2026-11-24T00:00:00+00:00")
    assert "0.40" in priced and "pricebooks create" not in priced
