"""`openmaas models …` for the registry: list, show, compare, alias, tag, download, delete.

They join the `models` command group (which also holds `models import`) via `add_commands`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import console, emit_json, run, show, table
from openmaas.cli.training import parse_pairs

MODEL_COLUMNS = ("name", "task", "latest_version", "aliases", "created_at")
VERSION_COLUMNS = ("ref", "task", "aliases", "tags", "created_at")


@client_command
def models_list(options: ClientOptions) -> None:
    """List the organization's models."""
    page = run(lambda: options.client().registry.models(limit=100))
    if options.as_json:
        emit_json(page.data)
        return
    rows = [
        {**m.model_dump(mode="json"), "aliases": [f"{a}→{v}" for a, v in m.aliases.items()]}
        for m in page.data
    ]
    table(rows, MODEL_COLUMNS)


@client_command
def models_show(
    options: ClientOptions,
    ref: str = typer.Argument(..., help="A model name (all versions), or name:3 / name@alias (one version)"),
) -> None:
    """Show a model's versions, or one version with its metrics, lineage and manifest."""
    api = options.client()
    if ":" not in ref and "@" not in ref:
        versions = run(lambda: api.registry.versions(ref, limit=100)).data
        if options.as_json:
            emit_json(versions)
            return
        table([{**v.model_dump(mode="json"), **_headline(v.metrics)} for v in versions], VERSION_COLUMNS)
        return
    version = run(lambda: api.registry.version(ref))
    if options.as_json:
        emit_json(version)
        return
    show(version, as_json=False, columns=VERSION_COLUMNS)
    console.print(f"lineage: {version.lineage.model_dump()}")
    scalars = {k: v for k, v in version.metrics.items() if isinstance(v, int | float)}
    table([{"metric": k, "value": f"{v:.4g}"} for k, v in scalars.items()], ("metric", "value"))


def _headline(metrics: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


@client_command
def models_compare(
    options: ClientOptions,
    refs: list[str] = typer.Argument(..., help="Versions to compare, e.g. churn:1 churn@production"),
) -> None:
    """Show the metrics of several versions side by side."""
    comparison = run(lambda: options.client().registry.compare(refs))
    if options.as_json:
        emit_json(comparison)
        return
    names = [v.ref for v in comparison.versions]
    rows = [
        {"metric": metric, **{ref: _fmt(values.get(ref)) for ref in names}}
        for metric, values in comparison.metrics.items()
        if any(isinstance(value, int | float) for value in values.values())
    ]
    table(rows, ("metric", *names))


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else ("" if value is None else str(value))


@client_command
def models_alias(
    options: ClientOptions,
    name: str = typer.Argument(..., help="Model name"),
    alias: str = typer.Argument(..., help="Alias, e.g. production"),
    version: int = typer.Argument(None, help="Version the alias points to (omit with --remove)"),
    remove: bool = typer.Option(False, "--remove", help="Remove the alias"),
) -> None:
    """Point NAME@ALIAS at a version (or remove it)."""
    api = options.client()
    if remove:
        model = run(lambda: api.registry.remove_alias(name, alias))
    else:
        if version is None:
            raise typer.BadParameter("give the VERSION the alias points to, or --remove")
        model = run(lambda: api.registry.set_alias(name, alias, version))
    options.show(model, columns=("name", "latest_version", "aliases"))


@client_command
def models_tag(
    options: ClientOptions,
    ref: str = typer.Argument(..., help="Version: name:3 or name@alias"),
    tags: list[str] = typer.Argument(..., help="key=value to set, key= to remove"),
) -> None:
    """Set or remove tags on a version."""
    pairs = {k: (None if v in ("", None) else str(v)) for k, v in parse_pairs(tags, "TAGS").items()}
    options.show(run(lambda: options.client().registry.tag(ref, pairs)), columns=VERSION_COLUMNS)


@client_command(json=False)
def models_download(
    options: ClientOptions,
    ref: str = typer.Argument(..., help="Version: name, name:3 or name@alias"),
    output: Path = typer.Option(None, "--output", "-o", help="Zip file to write (default NAME-VERSION.zip)"),
) -> None:
    """Download a version's artifact (safetensors weights + JSON manifest) as a zip."""
    from rich.progress import BarColumn, DownloadColumn, Progress

    api = options.client()
    version = run(lambda: api.registry.version(ref))
    dest = output or Path(f"{version.model}-{version.version}.zip")
    with Progress(
        "{task.description}", BarColumn(), DownloadColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task(f"Downloading {version.ref}", total=None)
        run(
            lambda: api.registry.download(
                version.ref, dest, lambda done, total: bar.update(task, completed=done, total=total or None)
            )
        )
    console.print(f"Saved {version.ref} to {dest}")


@client_command
def models_delete(
    options: ClientOptions,
    ref: str = typer.Argument(
        ..., help="A version (name:3), or a model name for the model with all its versions"
    ),
) -> None:
    """Delete a model version and its artifact, or a whole model (refused while an alias, a
    marketplace listing, a deployment or a traffic split uses it)."""
    api = options.client()
    if ":" not in ref and "@" not in ref:
        model = run(lambda: api.registry.delete_model(ref))
        if options.as_json:
            emit_json(model)
            return
        console.print(f"Deleted model {model.name} and its versions")
        return
    deleted = run(lambda: api.registry.delete(ref))
    if options.as_json:
        emit_json(deleted)
        return
    console.print(f"Deleted {deleted.ref}: {json.dumps(_headline(deleted.metrics))}")


def add_commands(app: typer.Typer) -> None:
    """Add the registry commands to the `models` command group."""
    for name, command in (
        ("list", models_list),
        ("show", models_show),
        ("compare", models_compare),
        ("alias", models_alias),
        ("tag", models_tag),
        ("download", models_download),
        ("delete", models_delete),
    ):
        app.command(name)(command)
