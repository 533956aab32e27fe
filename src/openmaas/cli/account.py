"""Client commands for a tenant: login, whoami, keys, audit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from openmaas.cli.output import console, fail, run, show

if TYPE_CHECKING:
    from openmaas.sdk import Client

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

UrlOpt = typer.Option(None, "--url", help="Server URL (else OPENMAAS_URL or the saved profile)")
KeyOpt = typer.Option(None, "--key", help="API key (else OPENMAAS_API_KEY or the saved profile)")
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts")


def client(url: str | None, key: str | None, *, operator: bool = False) -> Client:
    from openmaas.cli.profiles import resolve
    from openmaas.config import Settings
    from openmaas.sdk import Client

    connection = resolve(Settings(), url, key, operator=operator)
    if not connection.api_key:
        fail("No API key: pass --key, set OPENMAAS_API_KEY, or run `openmaas login`.")
    return Client(connection.url, connection.api_key)


def login(
    url: str = typer.Option(..., "--url", help="Server URL, e.g. http://127.0.0.1:8000"),
    key: str = typer.Option(..., "--key", help="Your API key (om-…)"),
    profile: str = typer.Option("default", "--profile", help="Profile name"),
) -> None:
    """Check a key against a server and save both as a profile."""
    from openmaas.cli.profiles import save_profile
    from openmaas.config import Settings
    from openmaas.sdk import Client

    with Client(url, key) as api:
        caller = run(api.me)
    save_profile(Settings().profiles_path, profile, url, key)
    who = caller.organization.name if caller.organization else "the platform operator"
    console.print(f"Logged in to {url} as {who} (key {caller.key_id}); saved as profile {profile!r}.")


def whoami(url: str | None = UrlOpt, key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Show the organization and scopes of the current key."""
    caller = run(client(url, key).me)
    if as_json:
        show(caller, as_json=True, columns=())
        return
    org = caller.organization
    console.print(f"key: {caller.key_id}")
    console.print(f"organization: {org.name} ({org.id})" if org else "organization: none (operator)")
    console.print(f"scopes: {', '.join(caller.scopes)}")


@keys_app.command("create")
def keys_create(
    name: str = typer.Option("default", "--name"),
    scope: list[str] = typer.Option(None, "--scope", help="Repeat for several; default: your key's scopes"),
    expires_in: str = typer.Option(None, "--expires-in", help="e.g. 30d, 12h, 2w"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a key in your organization; the full key is shown only now."""
    api = client(url, key)
    created = run(lambda: api.api_keys.create(name, scopes=scope or None, expires_in=expires_in))
    show_created_key(created, as_json=as_json)


def show_created_key(created: Any, *, as_json: bool) -> None:
    show(created, as_json=as_json, columns=("id", "name", "scopes", "expires_at"))
    if not as_json:
        console.print(f"key (shown only now, store it safely): [bold]{created.key}[/]", soft_wrap=True)


@keys_app.command("list")
def keys_list(url: str | None = UrlOpt, key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """List your organization's keys (never the full key)."""
    from openmaas.sdk.client import iterate

    api = client(url, key)
    items = run(lambda: list(iterate(api.api_keys.list, limit=100)))
    show(items, as_json=as_json, columns=KEY_COLUMNS)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(...),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Revoke a key: it stops working within a second."""
    api = client(url, key)
    show(run(lambda: api.api_keys.revoke(key_id)), as_json=as_json, columns=KEY_COLUMNS)


@audit_app.command("list")
def audit_list(
    action: str = typer.Option(None, "--action"),
    limit: int = typer.Option(50, "--limit"),
    url: str | None = UrlOpt,
    key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The newest audit entries of your organization (needs an admin-scoped key)."""
    api = client(url, key)
    page = run(lambda: api.audit_log.list(action=action, limit=limit))
    show(page.data, as_json=as_json, columns=AUDIT_COLUMNS)
