"""`openmaas train` (with `--follow`: a live progress bar per epoch with the loss and the
validation metric) and `openmaas jobs` (list, show, cancel, events)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand

from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import api_errors, console, emit_json, fail, run, show, table

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from openmaas.schemas.jobs import JobPublic
    from openmaas.sdk import Client

jobs_app = typer.Typer(help="Jobs: validation, training and other long work.", no_args_is_help=True)
JOB_COLUMNS = ("id", "kind", "status", "attempts", "created_at", "finished_at")
EVENT_COLUMNS = ("id", "created_at", "type", "level", "message")


def parse_pairs(pairs: list[str], option: str) -> dict[str, Any]:
    """`k=v` pairs into a dict; values are JSON when they parse (`20`, `[64, 32]`, `true`), else
    strings; dotted keys nest (`split.test=0.2`)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"{option} takes key=value, not {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return result


class TrainCommand(TyperCommand):
    """`openmaas train`, whose help ends with each task's hyperparameters and their defaults.

    They are read from `openmaas.training.config` when the help is shown, not when the CLI starts:
    importing the training package loads torch, which no other command needs.
    """

    # Typer's context and formatter are its own vendored click's, which it does not export.
    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.epilog = hyperparameters_help()
        super().format_help(ctx, formatter)


def hyperparameters_help() -> str:
    """Each task's hyperparameters as `name=default` (what `--param` takes); those every task
    shares with the same default are listed once."""
    from openmaas.training.config import CONFIGS, hyperparameters

    tasks = {
        task.value: {entry["name"]: entry["default"] for entry in hyperparameters(task.value)}
        for task in CONFIGS
    }
    first, *others = tasks.values()
    shared = {
        name: default
        for name, default in first.items()
        if all(name in params and params[name] == default for params in others)
    }
    lines = ["Hyperparameters (--param name=value; the defaults shown):", f"every task: {_pairs(shared)}"]
    for task, params in tasks.items():
        lines.append(f"{task}: {_pairs({k: v for k, v in params.items() if k not in shared})}")
    return "\n\n".join(lines)  # Typer keeps blank-line breaks in an epilog


def _pairs(params: dict[str, Any]) -> str:
    # As --param reads them: JSON where it parses (numbers, lists, null), text otherwise.
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in params.items())


@client_command
def train(
    options: ClientOptions,
    task: str = typer.Option(
        ...,
        "--task",
        help="tabular-classification, tabular-regression, image-, text-, "
        "audio-classification or recommendation",
    ),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name, name:version or id"),
    target: str = typer.Option(None, "--target", help="The label column (tables)"),
    param: list[str] = typer.Option(
        None, "--param", help="Hyperparameter key=value (each task's are listed below); repeat"
    ),
    preprocess: list[str] = typer.Option(
        None, "--preprocess", help="Preprocessing key=value, e.g. split.test=0.2"
    ),
    model: str = typer.Option(None, "--model", help="Registry name (default: the dataset's name)"),
    parent: str = typer.Option(None, "--parent", help="A model version this one derives from"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Show progress until the job ends"),
) -> None:
    """Start a training job; the finished model becomes a new version in the registry."""
    api = options.client()
    job = run(
        lambda: api.training_jobs.create(
            task=task,
            dataset=dataset,
            target=target,
            params=parse_pairs(param or [], "--param"),
            preprocessing=parse_pairs(preprocess or [], "--preprocess"),
            model=model,
            parent=parent,
        )
    )
    if not follow:
        options.show(job, columns=JOB_COLUMNS)
        return
    if not options.as_json:
        console.print(f"Training job {job.id} ({job.status}).")
    final = follow_job(api, job, quiet=options.as_json)
    if options.as_json:
        emit_json(final)
    report_end(final)


def follow_job(api: Client, job: JobPublic, *, quiet: bool = False) -> JobPublic:
    """Stream a job's events: a bar per epoch for training, log lines as they come."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    total = int(job.params.get("epochs") or 0) or None
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        "{task.fields[metrics]}",
        console=console,
        disable=quiet,
    ) as bar:
        task = bar.add_task("waiting", total=total, metrics="")
        with api_errors():
            _show_events(api, job, bar, task)
    return run(lambda: api.jobs.get(job.id))


def _show_events(api: Client, job: JobPublic, bar: Progress, task: TaskID) -> None:
    for event in api.jobs.stream_events(job.id):
        data = event.data or {}
        if event.type == "metrics" and "epoch" in data:
            shown = "  ".join(
                f"{k} {v:.4g}"
                for k, v in data.items()
                if (k == "train_loss" or k.startswith("val_")) and isinstance(v, int | float)
            )
            bar.update(task, completed=int(data["epoch"]), description="training", metrics=shown)
        elif event.type == "status":
            bar.update(task, description=str(data.get("status", event.type)))
            bar.console.print(f"[dim]{event.message}[/]")
        elif event.level in ("warning", "error") or event.type == "log":
            bar.console.print(f"[dim]{event.message}[/]")


def report_end(job: JobPublic) -> None:
    if job.status == "succeeded":
        result = job.result or {}
        if result.get("ref"):
            console.print(f"[bold green]Succeeded:[/] model version [bold]{result['ref']}[/]")
            metrics = {k: v for k, v in (result.get("metrics") or {}).items() if isinstance(v, int | float)}
            console.print("  " + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        else:
            console.print(f"[bold green]Succeeded:[/] {json.dumps(result)}")
        return
    message = (job.error or {}).get("message", "")
    fail(f"Job {job.id} {job.status}{': ' + message if message else ''}")


@jobs_app.command("list")
@client_command
def jobs_list(
    options: ClientOptions,
    kind: str = typer.Option(None, "--kind", help="train, validate_dataset, …"),
    status: str = typer.Option(None, "--status"),
) -> None:
    """List jobs, newest first."""
    page = run(lambda: options.client().jobs.list(kind=kind, status=status, limit=100))
    options.show(page.data, columns=JOB_COLUMNS)


@jobs_app.command("show")
@client_command
def jobs_show(options: ClientOptions, job_id: str) -> None:
    """Show a job with its parameters, result or error."""
    job = run(lambda: options.client().jobs.get(job_id))
    if options.as_json:
        emit_json(job)
        return
    show(job, as_json=False, columns=JOB_COLUMNS)
    console.print_json(json.dumps({"params": job.params, "result": job.result, "error": job.error}))


@jobs_app.command("cancel")
@client_command
def jobs_cancel(options: ClientOptions, job_id: str) -> None:
    """Cancel a job; a running one stops within seconds."""
    options.show(run(lambda: options.client().jobs.cancel(job_id)), columns=JOB_COLUMNS)


@jobs_app.command("pause")
@client_command
def jobs_pause(options: ClientOptions, job_id: str) -> None:
    """Pause a job; `resume` continues it from its last checkpoint."""
    options.show(run(lambda: options.client().jobs.pause(job_id)), columns=JOB_COLUMNS)


@jobs_app.command("resume")
@client_command
def jobs_resume(options: ClientOptions, job_id: str) -> None:
    """Queue a paused job again."""
    options.show(run(lambda: options.client().jobs.resume(job_id)), columns=JOB_COLUMNS)


@jobs_app.command("events")
@client_command
def jobs_events(
    options: ClientOptions,
    job_id: str,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the job ends"),
) -> None:
    """List a job's events (status changes, metrics, checkpoints, log lines)."""
    api = options.client()
    if follow:
        final = follow_job(api, run(lambda: api.jobs.get(job_id)), quiet=options.as_json)
        if options.as_json:
            emit_json(final)
        report_end(final)
        return
    page = run(lambda: api.jobs.events(job_id, limit=1000))
    if options.as_json:
        emit_json(page.data)
        return
    table(page.data, EVENT_COLUMNS)
