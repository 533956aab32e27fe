"""`openmaas optimize REF --method M [--force] [--follow]`: start an optimisation job; with
`--follow`, a live progress bar over its stages, then the result side by side with its parent
(size, latency p50 at batch 1 and 32, the test metric and its change)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import api_errors, console, emit_json, fail, run
from openmaas.cli.training import JOB_COLUMNS
from openmaas.schemas.jobs import JobPublic
from openmaas.sdk.client import Client


@client_command
def optimize(
    options: ClientOptions,
    model: str = typer.Argument(..., help="The version to optimise: name:3 or name@alias"),
    method: str = typer.Option(..., "--method", "-m", help="onnx-fp32, dynamic-int8, static-int8 or prune-N"),
    max_metric_drop: float = typer.Option(
        None, "--max-metric-drop", help="Largest allowed drop of the test metric (default: the server's)"
    ),
    force: bool = typer.Option(False, "--force", help="Keep the result even if its metric drops too much"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Show progress until the job ends"),
) -> None:
    """Optimise a model version; the measured result becomes a new version of the same model."""
    api = options.client()
    job = run(
        lambda: api.optimizations.create(model, method=method, max_metric_drop=max_metric_drop, force=force)
    )
    if not follow:
        options.show(job, columns=JOB_COLUMNS)
        return
    if not options.as_json:
        console.print(f"Optimisation job {job.id} ({job.status}).")
    final = follow_optimization(api, job, quiet=options.as_json)
    if options.as_json:
        emit_json(final)
    elif final.status == "succeeded":
        console.print(f"[bold green]Succeeded:[/] model version [bold]{(final.result or {}).get('ref')}[/]")
        console.print(comparison_table(final.result or {}))
    if final.status != "succeeded":
        fail(f"Job {final.id} {final.status}: {(final.error or {}).get('message', '')}")


def follow_optimization(api: Client, job: JobPublic, *, quiet: bool = False) -> JobPublic:
    """A bar over the job's stages (export, quantise, calibrate, measure, …) until it ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    ) as bar:
        task = bar.add_task("waiting", total=None)
        with api_errors():
            for event in api.jobs.stream_events(job.id):
                data = event.data or {}
                if event.type == "progress" and "step" in data:
                    bar.update(
                        task, completed=int(data["step"]), total=int(data["total"]), description=data["stage"]
                    )
                    bar.console.print(f"[dim]{event.message}[/]")
                elif event.type in ("status", "log") or event.level in ("warning", "error"):
                    bar.console.print(f"[dim]{event.message}[/]")
    return run(lambda: api.jobs.get(job.id))


def comparison_table(result: dict[str, Any]) -> Table:
    """The parent and the result side by side, from the job's result."""
    comparison = result.get("comparison") or {}
    parent, after = comparison.get("parent") or {}, comparison.get("result") or {}
    change = comparison.get("metric_change") or {}
    table = Table("", str(parent.get("ref", "parent")), str(result.get("ref", "result")))
    table.add_row("size (bytes)", *(str((side.get("size") or {}).get("bytes")) for side in (parent, after)))
    for batch in ("p50_batch_1", "p50_batch_32"):
        values = [(side.get("latency_ms") or {}).get(batch) for side in (parent, after)]
        table.add_row(f"latency {batch} (ms)", *(f"{v:.3f}" if v is not None else "-" for v in values))
    if change:
        table.add_row(
            f"{change['metric']} (change {change['change']:+.4f})",
            f"{change['parent']:.4f}",
            f"{change['result']:.4f}",
        )
    return table
