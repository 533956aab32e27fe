"""`openmaas fine-tune`: OpenAI-style fine-tuning jobs — create one (LoRA on an imported model,
optionally waiting with a progress bar over its steps), list, show, events, checkpoints, cancel,
pause, resume."""

from __future__ import annotations

from typing import Any

import typer

from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import console, fail, run, show

FINISHED = ("succeeded", "failed", "cancelled")

fine_tune_app = typer.Typer(help="Fine-tuning jobs (OpenAI's /v1/fine_tuning/jobs).", no_args_is_help=True)
COLUMNS = ("id", "model", "status", "fine_tuned_model", "training_file", "trained_tokens", "created_at")
EVENT_COLUMNS = ("created_at", "type", "message")
CHECKPOINT_COLUMNS = ("step_number", "fine_tuned_model_checkpoint", "created_at")


def _auto(value: str | None, kind: type) -> Any:
    return None if value is None else ("auto" if value == "auto" else kind(value))


@fine_tune_app.command("create")
@client_command
def create(
    options: ClientOptions,
    model: str = typer.Option(..., "--model", help="The base: an imported model (name, name:3)"),
    training_file: str = typer.Option(..., "--training-file", help="file-… uploaded with purpose fine-tune"),
    validation_file: str = typer.Option(None, "--validation-file"),
    suffix: str = typer.Option(None, "--suffix", help="Part of the fine-tuned model's name"),
    seed: int = typer.Option(None, "--seed"),
    n_epochs: str = typer.Option(None, "--n-epochs", help="A number or auto"),
    batch_size: str = typer.Option(None, "--batch-size", help="A number or auto"),
    learning_rate_multiplier: str = typer.Option(None, "--learning-rate-multiplier", help="A number or auto"),
    lora_rank: int = typer.Option(None, "--lora-rank"),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Follow the job until it ends"),
) -> None:
    """Create a LoRA fine-tuning job."""
    hyper = {
        "n_epochs": _auto(n_epochs, int),
        "batch_size": _auto(batch_size, int),
        "learning_rate_multiplier": _auto(learning_rate_multiplier, float),
        "lora_rank": lora_rank,
    }
    api = options.client()
    job = run(
        lambda: api.fine_tuning.create(
            model=model, training_file=training_file, validation_file=validation_file, suffix=suffix,
            seed=seed, hyperparameters={k: v for k, v in hyper.items() if v is not None} or None,
        )
    )  # fmt: skip
    if wait:
        job = _follow(api, job.id, quiet=options.as_json)
    options.show(job, columns=COLUMNS)
    if job.status == "failed":
        fail(f"Fine-tuning job {job.id} failed: {job.error.message if job.error else ''}")


def _follow(api: Any, job_id: str, *, quiet: bool) -> Any:
    """Poll the job, with a bar over its training steps (from its newest metrics event)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    with Progress(
        "{task.description}", BarColumn(), MofNCompleteColumn(), console=console, disable=quiet
    ) as bar:
        task = bar.add_task("queued", total=None)
        while (job := run(lambda: api.fine_tuning.get(job_id))).status not in (
            "succeeded",
            "failed",
            "cancelled",
        ):
            latest = run(lambda: api.fine_tuning.events(job_id, limit=1)).data
            data = latest[0].data if latest and latest[0].type == "metrics" else None
            if data and "total_steps" in data:
                bar.update(task, completed=data["step"], total=data["total_steps"])
            bar.update(task, description=f"{job.status}")
            time.sleep(1.0)
    return job


@fine_tune_app.command("list")
@client_command
def list_(options: ClientOptions, limit: int = typer.Option(20, "--limit", min=1, max=1000)) -> None:
    """List fine-tuning jobs, newest first."""
    page = run(lambda: options.client().fine_tuning.list(limit=limit))
    show(page.data, as_json=options.as_json, columns=COLUMNS)


@fine_tune_app.command("show")
@client_command
def show_(options: ClientOptions, job_id: str = typer.Argument(..., help="ftjob-…")) -> None:
    """Show a fine-tuning job."""
    options.show(run(lambda: options.client().fine_tuning.get(job_id)), columns=COLUMNS)


@fine_tune_app.command("events")
@client_command
def events(
    options: ClientOptions,
    job_id: str = typer.Argument(..., help="ftjob-…"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
) -> None:
    """A job's events, newest first: status, log lines, training and validation loss."""
    page = run(lambda: options.client().fine_tuning.events(job_id, limit=limit))
    options.show(page.data, columns=EVENT_COLUMNS)


@fine_tune_app.command("checkpoints")
@client_command
def checkpoints(options: ClientOptions, job_id: str = typer.Argument(..., help="ftjob-…")) -> None:
    """A job's checkpoints, one per epoch."""
    options.show(
        run(lambda: options.client().fine_tuning.checkpoints(job_id)).data, columns=CHECKPOINT_COLUMNS
    )


def _state_command(action: str) -> None:
    @client_command
    def change(options: ClientOptions, job_id: str = typer.Argument(..., help="ftjob-…")) -> None:
        job = run(lambda: getattr(options.client().fine_tuning, action)(job_id))
        options.show(job, columns=COLUMNS)

    change.__doc__ = {
        "cancel": "Cancel a job; a running one stops at its next step.",
        "pause": "Pause a job; it stops at its next step, keeping its checkpoints.",
        "resume": "Queue a paused job again; it resumes from its last checkpoint.",
    }[action]
    fine_tune_app.command(action)(change)


for _action in ("cancel", "pause", "resume"):
    _state_command(_action)
