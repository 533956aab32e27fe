"""`openmaas datasets`: upload a file as a dataset version (with a progress bar), wait for its
validation, and list or show versions with the problems validation found."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import console, emit_json, fail, run, show, table, upload_progress

if TYPE_CHECKING:
    from openmaas.schemas.datasets import DatasetPublic

datasets_app = typer.Typer(help="Datasets: upload, validate, list.", no_args_is_help=True)
COLUMNS = ("id", "name", "version", "format", "size_bytes", "status", "rows", "created_at")
ISSUE_COLUMNS = ("severity", "code", "message", "file", "line", "column")


def show_dataset(dataset: DatasetPublic, *, as_json: bool) -> None:
    if as_json:
        emit_json(dataset.model_dump(mode="json", by_alias=True))
        return
    show(dataset, as_json=False, columns=COLUMNS)
    schema: dict[str, Any] = dataset.schema_ or {}
    if schema.get("columns"):
        table(schema["columns"], ("name", "type", "missing", "distinct"), title="Columns")
    if schema.get("classes"):
        console.print("classes: " + ", ".join(f"{k} ({v})" for k, v in schema["classes"].items()))
    if dataset.issues:
        table(dataset.issues, ISSUE_COLUMNS, title="Problems")


@datasets_app.command("upload")
@client_command
def upload(
    options: ClientOptions,
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True, help="CSV, Parquet, JSONL or zip"
    ),
    name: str = typer.Option(..., "--name", help="Dataset name; each upload is a new version"),
    target: str = typer.Option(None, "--target", help="The label column, checked by validation"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for validation to finish"),
) -> None:
    """Upload FILE as a new version of dataset NAME, then show what validation found."""
    api = options.client()
    size = file.stat().st_size
    with upload_progress(quiet=options.as_json) as bar:
        task = bar.add_task(f"Uploading {file.name}", total=size)
        dataset = run(
            lambda: api.datasets.upload(
                file, name=name, target=target, progress=lambda sent, _total: bar.update(task, completed=sent)
            )
        )
    if not options.as_json:
        console.print(
            f"Uploaded {dataset.name}:{dataset.version} ({dataset.id}), sha256 {dataset.sha256[:12]}…"
        )
    if wait and dataset.status == "validating":
        with console.status("Validating…", spinner="dots") if not options.as_json else nullcontext():
            dataset = run(lambda: api.datasets.wait_validated(dataset.id))
    show_dataset(dataset, as_json=options.as_json)
    if dataset.status == "failed":
        fail(f"Dataset {dataset.name}:{dataset.version} failed validation and cannot be trained on.")


@datasets_app.command("list")
@client_command
def list_(
    options: ClientOptions, name: str = typer.Option(None, "--name", help="Only versions of this dataset")
) -> None:
    """List dataset versions, newest first."""
    api = options.client()
    page = run(lambda: api.datasets.list(name=name, limit=100))
    if options.as_json:
        emit_json([item.model_dump(mode="json", by_alias=True) for item in page.data])
        return
    show(page.data, as_json=False, columns=COLUMNS)


@datasets_app.command("show")
@client_command
def show_(
    options: ClientOptions, ref: str = typer.Argument(..., help="Id, name (latest version) or name:version")
) -> None:
    """Show a dataset version: schema, row count, and problems with their locations."""
    show_dataset(run(lambda: options.client().datasets.get(ref)), as_json=options.as_json)
