"""How the CLI shows results: Rich tables for people, `--json` for scripts, errors on stderr — one
line saying what went wrong and what to do, never a traceback for a user's mistake."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(_plain(value), indent=2, sort_keys=False))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, str) and len(value) > 19 and value[10:11] == "T" and value[4:5] == "-":
        return value[:16].replace("T", " ")  # ISO timestamps, to the minute
    return str(value)


def table(rows: Sequence[Any], columns: Sequence[str], title: str | None = None) -> None:
    grid = Table(title=title, header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        data = _plain(row)
        grid.add_row(*(_cell(data.get(c)) for c in columns))
    console.print(grid)


def show(value: Any, *, as_json: bool, columns: Sequence[str], title: str | None = None) -> None:
    """One object or a list: JSON for scripts, a table for people."""
    if as_json:
        emit_json(value)
        return
    rows = value if isinstance(value, list) else [value]
    table(rows, columns, title)


CONNECTION_HINT = (
    "Is the server running (`openmaas serve`)? Point the CLI at another one with --url, "
    "OPENMAAS_URL or `openmaas login --url URL --key KEY`."
)


def upload_progress(*, quiet: bool) -> Any:
    """A transient Rich progress bar for an upload: bytes sent, of how many, and how fast
    (`quiet`: drawn nowhere, for --json)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    return Progress(*columns, console=console, transient=True, disable=quiet)


def error(message: str) -> None:
    """Print `message` (plain text, not markup) as the command's error."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    error(message)
    raise typer.Exit(code)


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn SDK exceptions into an error message and a non-zero exit."""
    from pydantic import ValidationError

    from openmaas.sdk.errors import APIConnectionError, APIError

    try:
        yield
    except APIError as exc:
        fail(str(exc))
    except APIConnectionError as exc:
        fail(f"{exc}. {CONNECTION_HINT}")
    except ValidationError as exc:
        problem = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}")


def run(action: Callable[[], Any]) -> Any:
    with api_errors():
        return action()


@contextmanager
def user_errors() -> Iterator[None]:
    """Around a whole command: what the machine it runs on got wrong (a setting that does not
    parse, a database that cannot be reached, a file or folder it cannot use) ends it with one
    line and exit status 1. Anything else is a bug, and keeps its traceback."""
    try:
        yield
    except Exception as exc:
        message = _user_error(exc)
        if message is None:
            raise
        error(message)
        sys.exit(1)


def _user_error(exc: Exception) -> str | None:
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, ValidationError) and exc.title == "Settings":
        problems = (
            f"OPENMAAS_{'_'.join(str(p) for p in e['loc']).upper()}={e['input']!r}: {e['msg']}"
            for e in exc.errors()
        )
        return f"{'; '.join(problems)}. Fix the setting, or unset it for the default."
    if isinstance(exc, OperationalError):
        reason = (str(exc.orig).strip().splitlines() or ["unknown reason"])[0]
        return (
            f"Cannot use the database: {reason}. "
            "Check OPENMAAS_DATABASE_URL and that the database server is running."
        )
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return None
