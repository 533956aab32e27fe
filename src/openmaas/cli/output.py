"""How the CLI shows results: Rich tables for people, `--json` for scripts, errors on stderr."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
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


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False)
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
        fail(f"{exc}\n{CONNECTION_HINT}")
    except ValidationError as exc:
        problem = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}")


def run(action: Callable[[], Any]) -> Any:
    with api_errors():
        return action()
