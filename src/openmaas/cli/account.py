"""Client commands for a tenant: login, whoami, keys, audit."""

from __future__ import annotations

from typing import Any

import typer

from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import console, run, show

KEY_COLUMNS = ("id", "name", "redacted", "scopes", "created_at", "expires_at", "revoked_at", "last_used_at")
AUDIT_COLUMNS = (
    "created_at",
    "organization_id",
    "actor_key_id",
    "action",
    "target_id",
    "outcome",
    "status_code",
)

keys_app = typer.Typer(help="Your organization's API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="Your organization's audit log.", no_args_is_help=True)


def login(
    url: str = typer.Option(..., "--url", help="Server URL, e.g. http://127.0.0.1:8000"),
    key: str = typer.Option(..., "--key", help="Your API key (om-…)"),
    profile: str = typer.Option("default", "--profile", help="Profile name"),
) -> None:
    """Check a key against a server and save both as a profile."""
    from openmaas.cli.profiles import check_url, save_profile
    from openmaas.config import Settings
    from openmaas.sdk import Client

    with Client(check_url(url, "--url"), key) as api:
        caller = run(api.me)
    save_profile(Settings().profiles_path, profile, url, key)
    who = caller.organization.name if caller.organization else "the platform operator"
    console.print(f"Logged in to {url} as {who} (key {caller.key_id}); saved as profile {profile!r}.")


@client_command
def whoami(options: ClientOptions) -> None:
    """Show the organization and scopes of the current key."""
    caller = run(options.client().me)
    if options.as_json:
        show(caller, as_json=True, columns=())
        return
    org = caller.organization
    console.print(f"key: {caller.key_id}")
    console.print(f"organization: {org.name} ({org.id})" if org else "organization: none (operator)")
    console.print(f"scopes: {', '.join(caller.scopes)}")


@keys_app.command("create")
@client_command
def keys_create(
    options: ClientOptions,
    name: str = typer.Option("default", "--name"),
    scope: list[str] = typer.Option(None, "--scope", help="Repeat for several; default: your key's scopes"),
    expires_in: str = typer.Option(None, "--expires-in", help="e.g. 30d, 12h, 2w"),
) -> None:
    """Create a key in your organization; the full key is shown only now."""
    api = options.client()
    created = run(lambda: api.api_keys.create(name, scopes=scope or None, expires_in=expires_in))
    show_created_key(created, as_json=options.as_json)


def show_created_key(created: Any, *, as_json: bool) -> None:
    show(created, as_json=as_json, columns=("id", "name", "scopes", "expires_at"))
    if not as_json:
        console.print(f"key (shown only now, store it safely): [bold]{created.key}[/]", soft_wrap=True)


@keys_app.command("list")
@client_command
def keys_list(options: ClientOptions) -> None:
    """List your organization's keys (never the full key)."""
    from openmaas.sdk.client import iterate

    api = options.client()
    options.show(run(lambda: list(iterate(api.api_keys.list, limit=100))), columns=KEY_COLUMNS)


@keys_app.command("revoke")
@client_command
def keys_revoke(options: ClientOptions, key_id: str = typer.Argument(...)) -> None:
    """Revoke a key: it stops working within a second."""
    api = options.client()
    options.show(run(lambda: api.api_keys.revoke(key_id)), columns=KEY_COLUMNS)


@audit_app.command("list")
@client_command
def audit_list(
    options: ClientOptions,
    action: str = typer.Option(None, "--action"),
    limit: int = typer.Option(50, "--limit"),
) -> None:
    """The newest audit entries of your organization (needs an admin-scoped key)."""
    api = options.client()
    options.show(run(lambda: api.audit_log.list(action=action, limit=limit)).data, columns=AUDIT_COLUMNS)
