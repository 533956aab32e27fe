"""`openmaas batches`: OpenAI-style batches — create one from a JSONL file of requests (uploaded
with purpose `batch`; `--wait` follows it with a progress bar over its lines), list, get, cancel,
and download its output or error file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import console, fail, run, show, table, upload_progress

ENDED = ("completed", "failed", "expired", "cancelled")

batches_app = typer.Typer(help="Batches of requests (OpenAI's /v1/batches).", no_args_is_help=True)
COLUMNS = (
    "id",
    "endpoint",
    "model",
    "status",
    "request_counts",
    "output_file_id",
    "error_file_id",
    "created_at",
)
ERROR_COLUMNS = ("line", "code", "param", "message")


@batches_app.command("create")
@client_command
def create(
    options: ClientOptions,
    file: Path = typer.Option(
        ..., "--file", exists=True, dir_okay=False, readable=True, help="JSONL requests"
    ),
    endpoint: str = typer.Option(
        ..., "--endpoint", help="/v1/chat/completions, /v1/completions or /v1/embeddings"
    ),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Follow the batch until it ends"),
) -> None:
    """Upload FILE (purpose batch) and run its requests as a batch."""
    api = options.client()
    with upload_progress(quiet=options.as_json) as bar:
        task = bar.add_task(f"Uploading {file.name}", total=file.stat().st_size)
        uploaded = run(
            lambda: api.files.upload(
                file, purpose="batch", progress=lambda sent, _total: bar.update(task, completed=sent)
            )
        )
    batch = run(lambda: api.batches.create(input_file_id=uploaded.id, endpoint=endpoint))
    if wait and batch.status not in ENDED:
        batch = _follow(api, batch.id, quiet=options.as_json)
    options.show(batch, columns=COLUMNS)
    if batch.status == "failed":
        if batch.errors and not options.as_json:
            table([e.model_dump() for e in batch.errors.data], ERROR_COLUMNS, title="Problems")
        fail(f"Batch {batch.id} failed.")


def _follow(api: Any, batch_id: str, *, quiet: bool) -> Any:
    """Poll the batch, with a bar over its lines."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=quiet) as bar:
        task = bar.add_task("validating", total=None)
        while (batch := run(lambda: api.batches.get(batch_id))).status not in ENDED:
            counts = batch.request_counts
            done = counts.completed + counts.failed
            bar.update(task, completed=done, total=counts.total or None, description=batch.status)
            time.sleep(0.5)
    return batch


@batches_app.command("list")
@client_command
def list_(options: ClientOptions, limit: int = typer.Option(20, "--limit", min=1, max=1000)) -> None:
    """List batches, newest first."""
    page = run(lambda: options.client().batches.list(limit=limit))
    show(page.data, as_json=options.as_json, columns=COLUMNS)


@batches_app.command("get")
@client_command
def get(options: ClientOptions, batch_id: str = typer.Argument(..., help="batch_…")) -> None:
    """Show a batch: its status, request counts and files."""
    options.show(run(lambda: options.client().batches.get(batch_id)), columns=COLUMNS)


@batches_app.command("cancel")
@client_command
def cancel(options: ClientOptions, batch_id: str = typer.Argument(..., help="batch_…")) -> None:
    """Cancel a batch: no new line is sent; the answered ones stay in its output."""
    options.show(run(lambda: options.client().batches.cancel(batch_id)), columns=COLUMNS)


@client_command(json=False)
def output(
    options: ClientOptions,
    batch_id: str = typer.Argument(..., help="batch_…"),
    dest: Path = typer.Option(
        None, "--output", "-o", help="Where to write it (default: <batch>_output.jsonl)"
    ),
    errors: bool = typer.Option(False, "--errors", help="The error file instead of the output file"),
) -> None:
    """Download a batch's output file (or, with --errors, its error file)."""
    api = options.client()
    batch = run(lambda: api.batches.get(batch_id))
    file_id = batch.error_file_id if errors else batch.output_file_id
    what = "error" if errors else "output"
    if file_id is None:
        fail(f"Batch {batch_id} has no {what} file (it is {batch.status}).")
    target = dest or Path(f"{batch_id}_{what}.jsonl")
    run(lambda: api.files.download(file_id, target))
    console.print(f"Saved the {what} of {batch_id} to {target}")


batches_app.command("output")(output)
