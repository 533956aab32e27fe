"""Usage, credits, invoices and the marketplace (`openmaas usage`, `invoices …`, `marketplace …`),
and the operator's billing commands (`openmaas admin credits|billing|limits|pricebooks|invoices …`)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import typer

from openmaas.cli.admin import OrgOpt
from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import console, fail, run, show

invoices_app = typer.Typer(help="Your organization's invoices.", no_args_is_help=True)
marketplace_app = typer.Typer(help="The model marketplace.", no_args_is_help=True)
admin_credits_app = typer.Typer(help="Organizations' prepaid credit.", no_args_is_help=True)
admin_billing_app = typer.Typer(
    help="Organizations' billing settings, caps and limits.", no_args_is_help=True
)
admin_pricebooks_app = typer.Typer(help="Versioned plan prices.", no_args_is_help=True)
admin_invoices_app = typer.Typer(help="Invoices of all organizations.", no_args_is_help=True)

USAGE_COLUMNS = ("day", "model", "deployment", "api_key_id")  # then unit, quantity, cost, events
EVENT_COLUMNS = ("occurred_at", "request_id", "unit", "quantity", "cost", "model", "api_key_id")
INVOICE_COLUMNS = ("period", "status", "subtotal", "credit_applied", "amount_due", "currency")
LINE_COLUMNS = ("kind", "description", "quantity", "included", "amount")
CREDIT_COLUMNS = ("balance", "unbilled", "reserved", "available", "prepaid", "monthly_cap", "period_spend")
LISTING_COLUMNS = (
    "id",
    "model",
    "owner_organization_id",
    "components",
    "available",
    "created_at",
    "withdrawn_at",
)
PRICEBOOK_COLUMNS = ("id", "plan", "version", "effective_from", "monthly_fee", "currency")


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """Add these commands to the `openmaas` app and its `admin` group."""
    app.command()(usage)
    app.command()(credits)
    app.add_typer(invoices_app, name="invoices")
    app.add_typer(marketplace_app, name="marketplace")
    admin_app.add_typer(admin_credits_app, name="credits")
    admin_app.add_typer(admin_billing_app, name="billing")
    admin_app.add_typer(admin_pricebooks_app, name="pricebooks")
    admin_app.add_typer(admin_invoices_app, name="invoices")


@client_command
def usage(
    options: ClientOptions,
    group_by: list[str] = typer.Option(
        None, "--group-by", help="day, model, deployment, api_key_id (each unit is always its own row)"
    ),
    start: datetime = typer.Option(None, "--start", help="From (ISO time, inclusive)"),
    end: datetime = typer.Option(None, "--end", help="Until (ISO time, exclusive)"),
    model: str = typer.Option(None, "--model", help="name:version, name@alias or a version id"),
    api_key_id: str = typer.Option(None, "--key-id"),
    events: bool = typer.Option(False, "--events", help="List single events instead of sums"),
    limit: int = typer.Option(50, "--limit", help="With --events: how many"),
) -> None:
    """Your organization's usage: sums per unit by day/model/deployment/key, or single events."""
    api = options.client()
    groups = group_by or (None if events else ["day"])
    report = run(
        lambda: api.usage(
            group_by=groups,
            granularity="event" if events else "bucket",
            start=start,
            end=end,
            model=model,
            api_key_id=api_key_id,
            limit=limit if events else None,
        )
    )
    if options.as_json:
        options.show(report.data, columns=())
        return
    if events:
        columns: tuple[str, ...] = EVENT_COLUMNS
    else:
        grouped = {g for item in groups or () for g in item.split(",")}
        columns = (*(c for c in USAGE_COLUMNS if c in grouped), "unit", "quantity", "cost", "events")
    # A model by name (name:version, or the marketplace listing), not its version id.
    rows = [{**item.model_dump(mode="json"), "model": item.model_name or item.model} for item in report.data]
    options.show(rows, columns=columns, title=f"Usage ({report.currency})")
    if report.unpriced and all(Decimal(item.cost) == 0 for item in report.data):
        console.print(
            "No price applied to this usage, so it cost nothing. An operator sets prices with "
            "`openmaas admin pricebooks create prices.json`; usage keeps the price in effect when it "
            "happened.",
            highlight=False,
        )


@client_command
def credits(options: ClientOptions) -> None:
    """Your organization's prepaid credit and this month's spend."""
    api = options.client()
    options.show(run(api.credits), columns=CREDIT_COLUMNS)


@invoices_app.command("list")
@client_command
def invoices_list(options: ClientOptions) -> None:
    """Every month's invoice, newest first (the current month is a draft)."""
    api = options.client()
    options.show(run(api.invoices.list).data, columns=INVOICE_COLUMNS)


@invoices_app.command("show")
@client_command
def invoices_show(options: ClientOptions, period: str = typer.Argument(..., help="YYYY-MM")) -> None:
    """One month's invoice with its lines."""
    api = options.client()
    invoice = run(lambda: api.invoices.get(period))
    if options.as_json:
        show(invoice, as_json=True, columns=())
        return
    show(
        invoice.lines,
        as_json=False,
        columns=LINE_COLUMNS,
        title=f"Invoice {invoice.period} ({invoice.status}, {invoice.timezone})",
    )
    show(invoice, as_json=False, columns=INVOICE_COLUMNS)


@invoices_app.command("download")
@client_command(json=False)
def invoices_download(
    options: ClientOptions,
    period: str = typer.Argument(..., help="YYYY-MM"),
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default: stdout)"),
) -> None:
    """Export one month's invoice as CSV or JSON."""
    if fmt not in ("csv", "json"):
        fail("--format must be csv or json")
    api = options.client()
    invoice = run(lambda: api.invoices.get(period))
    text = invoice.to_csv() if fmt == "csv" else invoice.model_dump_json(indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        console.print(f"Wrote {output}")


@marketplace_app.command("list")
@client_command
def marketplace_list(options: ClientOptions) -> None:
    """The catalogue: every model listed by any organization, with its prices."""
    api = options.client()
    options.show(run(lambda: api.marketplace.catalogue(limit=100)).data, columns=LISTING_COLUMNS)


@marketplace_app.command("listings")
@client_command
def marketplace_listings(options: ClientOptions) -> None:
    """Your organization's own listings, withdrawn ones included."""
    api = options.client()
    options.show(run(lambda: api.marketplace.listings(limit=100)).data, columns=LISTING_COLUMNS)


@marketplace_app.command("publish")
@client_command
def marketplace_publish(
    options: ClientOptions,
    model: str = typer.Argument(..., help="One of your model versions: my-model:3, my-model@prod or mv_…"),
    price: list[str] = typer.Option(..., "--price", help="UNIT=PRICE, e.g. output_tokens=0.60; repeat"),
    description: str = typer.Option("", "--description"),
) -> None:
    """Publish a model at your price (publishing again changes the price from now on)."""
    components = []
    for item in price:
        unit, sep, amount = item.partition("=")
        if not sep:
            fail(f"--price {item!r}: expected UNIT=PRICE")
        components.append({"unit": unit.strip(), "price": amount.strip()})
    api = options.client()
    listing = run(lambda: api.marketplace.publish(model, components, description=description))
    options.show(listing, columns=LISTING_COLUMNS)


@marketplace_app.command("withdraw")
@client_command
def marketplace_withdraw(options: ClientOptions, listing_id: str = typer.Argument(...)) -> None:
    """Take a listing off the catalogue."""
    api = options.client()
    options.show(run(lambda: api.marketplace.withdraw(listing_id)), columns=LISTING_COLUMNS)


@admin_credits_app.command("add")
@client_command
def admin_credits_add(
    options: ClientOptions,
    amount: str = typer.Argument(..., help="e.g. 12.50"),
    org: str = OrgOpt,
    note: str = typer.Option(None, "--note"),
) -> None:
    """Add prepaid credit to an organization (recorded with your key in its history)."""
    api = options.client(operator=True)
    entry = run(lambda: api.admin.billing.add_credits(org, amount, note=note))
    options.show(entry, columns=("id", "kind", "amount", "balance_after", "currency", "created_at"))


@admin_credits_app.command("show")
@client_command
def admin_credits_show(options: ClientOptions, org: str = OrgOpt) -> None:
    """An organization's wallet."""
    api = options.client(operator=True)
    options.show(run(lambda: api.admin.billing.credits(org)), columns=CREDIT_COLUMNS)


@admin_billing_app.command("set")
@client_command
def admin_billing_set(
    options: ClientOptions,
    org: str = OrgOpt,
    prepaid: bool = typer.Option(None, "--prepaid/--postpaid", help="Require prepaid credit"),
    monthly_cap: str = typer.Option(None, "--monthly-cap", help="Spending cap per month; 'none' removes it"),
    timezone: str = typer.Option(None, "--timezone", help="IANA zone of its billing months"),
) -> None:
    """Change an organization's billing settings."""
    settings: dict[str, object] = {"prepaid": prepaid, "timezone": timezone}
    if monthly_cap is not None:
        settings.update(
            {"clear_monthly_cap": True} if monthly_cap == "none" else {"monthly_cap": monthly_cap}
        )
    api = options.client(operator=True)
    options.show(run(lambda: api.admin.billing.update(org, **settings)), columns=CREDIT_COLUMNS)


@admin_billing_app.command("limits")
@client_command
def admin_billing_limits(
    options: ClientOptions,
    org: str = OrgOpt,
    key_id: str = typer.Option(None, "--key-id", help="Limit one key instead of the organization"),
    rpm: int = typer.Option(None, "--rpm", help="Requests per minute"),
    tpm: int = typer.Option(None, "--tpm", help="Tokens per minute"),
) -> None:
    """Override the plan's rate limits for an organization or one of its keys."""
    api = options.client(operator=True)
    result = run(
        lambda: api.admin.billing.set_rate_limits(
            org, key_id=key_id, requests_per_minute=rpm, tokens_per_minute=tpm
        )
    )
    options.show(result, columns=("subject_id", "requests_per_minute", "tokens_per_minute"))


@admin_pricebooks_app.command("create")
@client_command
def admin_pricebooks_create(
    options: ClientOptions,
    file: Path = typer.Argument(..., help="JSON: {plan, effective_from?, monthly_fee?, components: [...]}"),
) -> None:
    """Add the next version of a plan's prices from a JSON file."""
    from openmaas.schemas.billing import PricebookCreate

    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        fail(f"{file}: {exc}")
    api = options.client(operator=True)
    book = run(lambda: api.admin.billing.create_pricebook(PricebookCreate.model_validate(data)))
    options.show(book, columns=PRICEBOOK_COLUMNS)


@admin_pricebooks_app.command("list")
@client_command
def admin_pricebooks_list(options: ClientOptions, plan: str = typer.Option(None, "--plan")) -> None:
    """Pricebook versions, newest first."""
    api = options.client(operator=True)
    options.show(
        run(lambda: api.admin.billing.pricebooks(plan=plan, limit=100)).data,
        columns=PRICEBOOK_COLUMNS,
    )


@admin_pricebooks_app.command("show")
@client_command
def admin_pricebooks_show(options: ClientOptions, pricebook_id: str = typer.Argument(...)) -> None:
    """One pricebook version with its components."""
    api = options.client(operator=True)
    book = run(lambda: api.admin.billing.pricebook(pricebook_id))
    if options.as_json:
        show(book, as_json=True, columns=())
        return
    show(book, as_json=False, columns=PRICEBOOK_COLUMNS)
    show(
        book.components,
        as_json=False,
        columns=("unit", "price", "resource_class", "model", "included", "tiers"),
    )


@admin_invoices_app.command("finalize")
@client_command
def admin_invoices_finalize(options: ClientOptions) -> None:
    """Finalise every ended month not yet finalised (safe to run repeatedly, e.g. daily)."""
    api = options.client(operator=True)
    ids = run(api.admin.billing.finalize_invoices)
    if options.as_json:
        show({"finalized": ids}, as_json=True, columns=())
    else:
        console.print(f"Finalised {len(ids)} invoice(s).")
