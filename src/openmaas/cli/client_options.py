"""The options every client command shares, defined once: `--url`, `--key` and `--json`.

A command that talks to a server takes a `ClientOptions` as its first parameter and is decorated
with `@client_command`; Typer then sees `--url`, `--key` and `--json` after the command's own
options, and the command gets them as one value that builds the client and knows the output mode:

    @keys_app.command("revoke")
    @client_command
    def keys_revoke(options: ClientOptions, key_id: str = typer.Argument(...)) -> None:
        options.show(run(lambda: options.client().api_keys.revoke(key_id)), columns=KEY_COLUMNS)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import typer

from openmaas.cli.output import fail, show

if TYPE_CHECKING:
    from openmaas.sdk import Client

_URL = inspect.Parameter(
    "url",
    inspect.Parameter.KEYWORD_ONLY,
    default=typer.Option(None, "--url", help="Server URL (else OPENMAAS_URL or the saved profile)"),
    annotation=str | None,
)
_KEY = inspect.Parameter(
    "key",
    inspect.Parameter.KEYWORD_ONLY,
    default=typer.Option(None, "--key", help="API key (else OPENMAAS_API_KEY or the saved profile)"),
    annotation=str | None,
)
_JSON = inspect.Parameter(
    "as_json",
    inspect.Parameter.KEYWORD_ONLY,
    default=typer.Option(False, "--json", help="Print JSON for scripts"),
    annotation=bool,
)


@dataclass(frozen=True)
class ClientOptions:
    """What `--url`, `--key` and `--json` said."""

    url: str | None
    key: str | None
    as_json: bool = False

    def client(self, *, operator: bool = False) -> Client:
        """A client for the server and key from the flags, else the environment, else the profile
        (`operator=True`: else the server machine's admin key file)."""
        from openmaas.cli.profiles import resolve
        from openmaas.config import Settings
        from openmaas.sdk import Client

        connection = resolve(Settings(), self.url, self.key, operator=operator)
        if not connection.api_key:
            fail("No API key: pass --key, set OPENMAAS_API_KEY, or run `openmaas login`.")
        return Client(connection.url, connection.api_key)

    def show(self, value: Any, *, columns: Sequence[str], title: str | None = None) -> None:
        """One object or a list: JSON with `--json`, else a table."""
        show(value, as_json=self.as_json, columns=columns, title=title)


Command = Callable[..., None]


@overload
def client_command(command: Command) -> Command: ...
@overload
def client_command(*, json: bool = True) -> Callable[[Command], Command]: ...
def client_command(command: Command | None = None, *, json: bool = True) -> Any:
    """Give a command `--url`, `--key` and (unless `json=False`) `--json`, in place of its first
    parameter, which receives them as `ClientOptions`."""
    if command is None:
        return functools.partial(client_command, json=json)
    signature = inspect.signature(command, eval_str=True)
    first, *own = signature.parameters.values()
    if first.annotation is not ClientOptions:
        raise TypeError(f"{command.__name__}: the first parameter of a client command is its ClientOptions")
    shared = [_URL, _KEY, _JSON] if json else [_URL, _KEY]

    @functools.wraps(command)
    def with_options(*, url: str | None, key: str | None, as_json: bool = False, **given: Any) -> None:
        command(ClientOptions(url, key, as_json), **given)

    # Typer reads the parameters from here: the command's own, then the shared ones.
    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
    with_options.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_options
