"""Operator commands: organisations, their keys and the platform audit log (`openmaas admin …`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from openmaas.cli.account import AUDIT_COLUMNS, KEY_COLUMNS, JsonOpt, KeyOpt, UrlOpt, client, show_created_key
from openmaas.cli.output import run, show

if TYPE_CHECKING:
    from openmaas.sdk import Client

admin_app = typer.Typer(help="Operator commands (need the operator key).", no_args_is_help=True)
orgs_app = typer.Typer(help="Organizations.", no_args_is_help=True)
keys_app = typer.Typer(help="Organizations' API keys.", no_args_is_help=True)
admin_app.add_typer(orgs_app, name="orgs")
admin_app.add_typer(keys_app, name="keys")

ORG_COLUMNS = ("id", "name", "plan", "created_at")
OrgOpt = typer.Option(..., "--org", help="Organization name or id")


def operator(url: str | None, key: str | None) -> Client:
    return client(url, key, operator=True)


@orgs_app.command("create")
def orgs_create(
    name: str = typer.Argument(...),
    plan: str = typer.Option("default", "--plan"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create an organization."""
    api = operator(url, key)
    show(run(lambda: api.admin.organizations.create(name, plan=plan)), as_json=as_json, columns=ORG_COLUMNS)


@orgs_app.command("list")
def orgs_list(url: str | None = UrlOpt, key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """List organizations."""
    from openmaas.sdk.client import iterate

    api = operator(url, key)
    show(
        run(lambda: list(iterate(api.admin.organizations.list, limit=100))),
        as_json=as_json,
        columns=ORG_COLUMNS,
    )


@orgs_app.command("show")
def orgs_show(
    org: str = typer.Argument(..., help="Name or id"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show one organization."""
    api = operator(url, key)
    show(run(lambda: api.admin.organizations.get(org)), as_json=as_json, columns=ORG_COLUMNS)


@keys_app.command("create")
def keys_create(
    org: str = OrgOpt,
    name: str = typer.Option("default", "--name"),
    scope: list[str] = typer.Option(None, "--scope", help="Repeat for several; default: admin"),
    expires_in: str = typer.Option(None, "--expires-in", help="e.g. 30d, 12h, 2w"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a key for an organization; the full key is shown only now."""
    api = operator(url, key)
    created = run(lambda: api.admin.api_keys(org).create(name, scopes=scope or None, expires_in=expires_in))
    show_created_key(created, as_json=as_json)


@keys_app.command("list")
def keys_list(
    org: str = OrgOpt, url: str | None = UrlOpt, key: str | None = KeyOpt, as_json: bool = JsonOpt
) -> None:
    """List an organization's keys."""
    from openmaas.sdk.client import iterate

    api = operator(url, key)
    show(
        run(lambda: list(iterate(api.admin.api_keys(org).list, limit=100))),
        as_json=as_json,
        columns=KEY_COLUMNS,
    )


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(...),
    org: str = OrgOpt,
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Revoke an organization's key."""
    api = operator(url, key)
    show(run(lambda: api.admin.api_keys(org).revoke(key_id)), as_json=as_json, columns=KEY_COLUMNS)


@admin_app.command("audit")
def audit(
    org: str = typer.Option(None, "--org", help="Only this organization's id"),
    action: str = typer.Option(None, "--action"),
    limit: int = typer.Option(50, "--limit"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The platform's audit log, newest first."""
    api = operator(url, key)
    page = run(lambda: api.admin.audit_log.list(organization_id=org, action=action, limit=limit))
    show(page.data, as_json=as_json, columns=AUDIT_COLUMNS)
