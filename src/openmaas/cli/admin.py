"""Operator commands: organisations, their keys and the platform audit log (`openmaas admin …`)."""

from __future__ import annotations

import typer

from openmaas.cli.account import AUDIT_COLUMNS, KEY_COLUMNS, show_created_key
from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import run

admin_app = typer.Typer(help="Operator commands (need the operator key).", no_args_is_help=True)
orgs_app = typer.Typer(help="Organizations.", no_args_is_help=True)
keys_app = typer.Typer(help="Organizations' API keys.", no_args_is_help=True)
admin_app.add_typer(orgs_app, name="orgs")
admin_app.add_typer(keys_app, name="keys")

ORG_COLUMNS = ("id", "name", "plan", "created_at")
OrgOpt = typer.Option(..., "--org", help="Organization name or id")


@orgs_app.command("create")
@client_command
def orgs_create(
    options: ClientOptions,
    name: str = typer.Argument(...),
    plan: str = typer.Option("default", "--plan"),
) -> None:
    """Create an organization."""
    api = options.client(operator=True)
    options.show(run(lambda: api.admin.organizations.create(name, plan=plan)), columns=ORG_COLUMNS)


@orgs_app.command("list")
@client_command
def orgs_list(options: ClientOptions) -> None:
    """List organizations."""
    from openmaas.sdk.client import iterate

    api = options.client(operator=True)
    options.show(run(lambda: list(iterate(api.admin.organizations.list, limit=100))), columns=ORG_COLUMNS)


@orgs_app.command("show")
@client_command
def orgs_show(options: ClientOptions, org: str = typer.Argument(..., help="Name or id")) -> None:
    """Show one organization."""
    api = options.client(operator=True)
    options.show(run(lambda: api.admin.organizations.get(org)), columns=ORG_COLUMNS)


@keys_app.command("create")
@client_command
def keys_create(
    options: ClientOptions,
    org: str = OrgOpt,
    name: str = typer.Option("default", "--name"),
    scope: list[str] = typer.Option(None, "--scope", help="Repeat for several; default: admin"),
    expires_in: str = typer.Option(None, "--expires-in", help="e.g. 30d, 12h, 2w"),
) -> None:
    """Create a key for an organization; the full key is shown only now."""
    api = options.client(operator=True)
    created = run(lambda: api.admin.api_keys(org).create(name, scopes=scope or None, expires_in=expires_in))
    show_created_key(created, as_json=options.as_json)


@keys_app.command("list")
@client_command
def keys_list(options: ClientOptions, org: str = OrgOpt) -> None:
    """List an organization's keys."""
    from openmaas.sdk.client import iterate

    api = options.client(operator=True)
    options.show(run(lambda: list(iterate(api.admin.api_keys(org).list, limit=100))), columns=KEY_COLUMNS)


@keys_app.command("revoke")
@client_command
def keys_revoke(options: ClientOptions, key_id: str = typer.Argument(...), org: str = OrgOpt) -> None:
    """Revoke an organization's key."""
    api = options.client(operator=True)
    options.show(run(lambda: api.admin.api_keys(org).revoke(key_id)), columns=KEY_COLUMNS)


@admin_app.command("audit")
@client_command
def audit(
    options: ClientOptions,
    org: str = typer.Option(None, "--org", help="Only this organization's id"),
    action: str = typer.Option(None, "--action"),
    limit: int = typer.Option(50, "--limit"),
) -> None:
    """The platform's audit log, newest first."""
    api = options.client(operator=True)
    page = run(lambda: api.admin.audit_log.list(organization_id=org, action=action, limit=limit))
    options.show(page.data, columns=AUDIT_COLUMNS)
