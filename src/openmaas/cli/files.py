"""`openmaas files`: OpenAI's files — upload one with its purpose (with a progress bar; a
fine-tune file's problems shown by line), list, show, download the content, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import api_errors, console, emit_json, fail, run, show, table, upload_progress

files_app = typer.Typer(help="Files for fine-tuning and batches (OpenAI's /v1/files).", no_args_is_help=True)
COLUMNS = ("id", "purpose", "filename", "bytes", "created_at")
ISSUE_COLUMNS = ("line", "code", "message")


@files_app.command("upload")
@client_command
def upload(
    options: ClientOptions,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="The file to upload"),
    purpose: str = typer.Option(..., "--purpose", help="fine-tune, batch or user_data"),
) -> None:
    """Upload FILE; a fine-tune file must be chat-format JSONL, and every problem is listed by line."""
    api = options.client()
    with upload_progress(quiet=options.as_json) as bar:
        task = bar.add_task(f"Uploading {file.name}", total=file.stat().st_size)
        with api_errors():
            created = _upload_naming_problems(api, file, purpose, bar, task, as_json=options.as_json)
    options.show(created, columns=COLUMNS)


def _upload_naming_problems(api: Any, file: Path, purpose: str, bar: Any, task: Any, *, as_json: bool) -> Any:
    from openmaas.sdk.errors import BadRequestError

    try:
        return api.files.upload(
            file, purpose=purpose, progress=lambda sent, _total: bar.update(task, completed=sent)
        )
    except BadRequestError as exc:
        if not exc.issues:
            raise
        bar.stop()
        if as_json:
            emit_json({"error": {"message": exc.message, "code": exc.code, "issues": exc.issues}})
        else:
            table(exc.issues, ISSUE_COLUMNS, title="Problems")
        fail(f"{file.name} was not uploaded: {len(exc.issues)} problem(s).")


@files_app.command("list")
@client_command
def list_(
    options: ClientOptions,
    purpose: str = typer.Option(None, "--purpose", help="Only files with this purpose"),
    limit: int = typer.Option(100, "--limit", min=1, max=1000),
) -> None:
    """List files, newest first."""
    page = run(lambda: options.client().files.list(purpose=purpose, limit=limit))
    show(page.data, as_json=options.as_json, columns=COLUMNS)


@files_app.command("show")
@client_command
def show_(options: ClientOptions, file_id: str = typer.Argument(..., help="file-…")) -> None:
    """Show one file."""
    options.show(run(lambda: options.client().files.get(file_id)), columns=COLUMNS)


@client_command(json=False)
def download(
    options: ClientOptions,
    file_id: str = typer.Argument(..., help="file-…"),
    output: Path = typer.Option(None, "--output", "-o", help="Where to write it (default: its filename)"),
) -> None:
    """Download a file's content."""
    from rich.progress import BarColumn, DownloadColumn, Progress

    api = options.client()
    dest = output or Path(run(lambda: api.files.get(file_id)).filename)
    columns = ("{task.description}", BarColumn(), DownloadColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"Downloading {file_id}", total=None)
        run(
            lambda: api.files.download(
                file_id, dest, lambda done, total: bar.update(task, completed=done, total=total or None)
            )
        )
    console.print(f"Saved {file_id} to {dest}")


files_app.command("download")(download)


@files_app.command("delete")
@client_command
def delete(options: ClientOptions, file_id: str = typer.Argument(..., help="file-…")) -> None:
    """Delete a file and its content."""
    options.show(run(lambda: options.client().files.delete(file_id)), columns=("id", "deleted"))
