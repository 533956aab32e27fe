"""The `openmaas` command: server commands, operator commands and client commands."""

from __future__ import annotations

from collections.abc import Sequence

import typer

from openmaas.cli import (
    account,
    admin,
    batches,
    billing,
    datasets,
    explain,
    files,
    fine_tuning,
    models,
    optimize,
    server,
    serving,
    training,
    worker,
)
from openmaas.cli.output import user_errors

app = typer.Typer(
    name="openmaas",
    help="OpenMaaS: train, optimise, deploy, serve and bill AI models for many organizations.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _show_version(asked: bool) -> None:
    if asked:
        from openmaas import __version__

        typer.echo(f"openmaas {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    pass


billing.register(app, admin.admin_app)
app.command()(server.serve)
app.add_typer(server.db_app, name="db")
app.command()(worker.worker)
app.add_typer(admin.admin_app, name="admin")
app.command()(account.login)
app.command()(account.whoami)
app.add_typer(account.keys_app, name="keys")
app.add_typer(account.audit_app, name="audit")
app.add_typer(serving.models_app, name="models")
models.add_commands(serving.models_app)
app.add_typer(datasets.datasets_app, name="datasets")
app.add_typer(files.files_app, name="files")
app.add_typer(fine_tuning.fine_tune_app, name="fine-tune")
app.add_typer(batches.batches_app, name="batches")
app.command(cls=training.TrainCommand)(training.train)
app.command()(optimize.optimize)
app.add_typer(training.jobs_app, name="jobs")
app.command()(serving.deploy)
app.command()(serving.predict)
app.command()(explain.explain)
app.add_typer(serving.deployments_app, name="deployments")


def run(args: Sequence[str] | None = None) -> None:
    """Run the command `args` (default: the program's arguments); exits."""
    with user_errors():
        app(args=args, prog_name="openmaas")


if __name__ == "__main__":
    run()
