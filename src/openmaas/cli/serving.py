"""Client commands for serving: import a model folder, deploy it, and manage deployments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import api_errors, console, emit_json, fail, run

if TYPE_CHECKING:
    from openmaas.schemas.serving import DeploymentPublic
    from openmaas.sdk import Client

DEPLOYMENT_COLUMNS = (
    "name",
    "model",
    "task",
    "state",
    "serving",
    "starting",
    "replicas",
    "error",
    "updated_at",
)

deployments_app = typer.Typer(help="Deployments: served models.", no_args_is_help=True)
models_app = typer.Typer(help="Models in the registry.", no_args_is_help=True)


def _engine_options(pairs: list[str]) -> dict[str, object]:
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            fail(f"--engine takes key=value, got {pair!r}")
        lowered = value.lower()
        options[key] = (
            int(value) if value.isdigit() else lowered == "true" if lowered in ("true", "false") else value
        )
    return options


@models_app.command("import")
@client_command
def import_model(
    options: ClientOptions,
    folder: Path = typer.Argument(
        ...,
        exists=True,
        help="A Hugging Face model folder, a .onnx file or a .gguf file (llama.cpp's format)",
    ),
    name: str = typer.Option(..., "--name", help="Model name in the registry"),
    onnx_task: str = typer.Option(None, "--task", help="For .onnx files: tensor-inference (the default)"),
) -> None:
    """Upload a Hugging Face model folder (safetensors, config, tokenizer), an ONNX file or a GGUF file
    (a Llama- or Qwen2-family LLM in F32, F16, BF16, Q8_0 or Q4_0) as a new model version."""
    api = options.client()
    columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True, disable=options.as_json) as bar:
        task = bar.add_task(f"uploading {folder.name}", total=None)

        def progress(sent: int, total: int) -> None:
            bar.update(task, completed=sent, total=total)

        try:
            version = run(lambda: api.import_model(folder, name, progress=progress, task=onnx_task))
        except ValueError as exc:  # not a folder nor an ONNX or GGUF file
            fail(str(exc))
    options.show(version, columns=("ref", "task", "id", "created_at"))


@client_command
def deploy(
    options: ClientOptions,
    model: str = typer.Argument(..., help="name, name:3 or name@alias"),
    name: str = typer.Option(None, "--name", help="Deployment name (default: the model's name)"),
    replicas: int = typer.Option(1, "--replicas"),
    max_batch_size: int = typer.Option(32, "--max-batch-size"),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms"),
    engine: list[str] = typer.Option(None, "--engine", help="LLM engine setting key=value (repeatable)"),
    min_replicas: int = typer.Option(
        1, "--min-replicas", help="0: unload when idle, load on the next request"
    ),
    idle_timeout: float = typer.Option(
        None, "--idle-timeout", help="Idle seconds before unloading (default 300)"
    ),
    canary: int = typer.Option(
        None,
        "--canary",
        min=1,
        max=100,
        help="Send this percent of the existing deployment --name's requests to MODEL (100 promotes it)",
    ),
    strategy: str = typer.Option(
        None,
        "--strategy",
        help="For an existing deployment --name: rolling (the default: no downtime) or recreate "
        "(stop the old version first, when both do not fit in memory)",
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the deployment is ready"),
) -> None:
    """Deploy a model version; its name becomes the `model` of API calls. An existing deployment
    --name is rolled to MODEL without downtime. With --canary, route a share of an existing
    deployment's requests to MODEL instead."""
    api = options.client()
    if canary is not None:
        if not name:
            fail("--canary needs --name: the deployment that gets the canary")
        created = run(lambda: api.deployments.canary(name, model, canary))
    elif name and _exists(api, name):
        created = run(lambda: api.deployments.update(name, model=model, strategy=strategy))
        if not options.as_json:
            console.print(f"updating {name} to {model} ({strategy or 'rolling'})")
    elif strategy is not None:
        fail("--strategy applies to an existing deployment --name")
    else:
        scaling = {"min_replicas": min_replicas, **({"idle_timeout_s": idle_timeout} if idle_timeout else {})}
        settings = _engine_options(engine or [])
        created = run(
            lambda: api.deployments.create(
                model,
                name=name,
                replicas=replicas,
                max_batch_size=max_batch_size,
                max_wait_ms=max_wait_ms,
                engine=settings,
                **scaling,
            )
        )
    _finish(options, api, created, wait)


def _exists(api: Client, name: str) -> bool:
    from openmaas.sdk import NotFoundError

    with api_errors():
        try:
            api.deployments.get(name)
        except NotFoundError:
            return False
    return True


def _finish(options: ClientOptions, api: Client, deployment: DeploymentPublic, wait: bool) -> None:
    if wait:
        with console.status(f"loading {deployment.name}…", spinner="dots"):
            try:
                deployment = api.deployments.wait_ready(deployment.name)
            except RuntimeError as exc:
                fail(str(exc))
    options.show(deployment, columns=DEPLOYMENT_COLUMNS)
    if deployment.traffic and not options.as_json:
        console.print("traffic: " + ", ".join(f"{t.version} {t.weight}%" for t in deployment.traffic))


@deployments_app.command("traffic")
@client_command
def deployments_traffic(
    options: ClientOptions,
    name: str = typer.Argument(...),
    weights: list[str] = typer.Argument(
        ..., help="VERSION=PERCENT pairs summing to 100, e.g. churn:3=90 churn:4=10"
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until the new split is serving"),
) -> None:
    """Split a deployment's requests between versions (a canary); one version at 100 promotes or
    rolls back: `openmaas deployments traffic churn-api churn:3=90 churn:4=10`."""
    split: dict[str, int] = {}
    for pair in weights:
        version, sep, percent = pair.rpartition("=")
        if not sep or not version or not percent.isdigit():
            fail(f"traffic takes VERSION=PERCENT, got {pair!r}")
        split[version] = int(percent)
    api = options.client()
    _finish(options, api, run(lambda: api.deployments.traffic(name, split)), wait)


@deployments_app.command("list")
@client_command
def deployments_list(options: ClientOptions) -> None:
    """List deployments."""
    from openmaas.sdk.client import iterate

    api = options.client()
    options.show(
        run(lambda: list(iterate(api.deployments.list, limit=100))),
        columns=DEPLOYMENT_COLUMNS,
    )


@deployments_app.command("show")
@client_command
def deployments_show(options: ClientOptions, name: str = typer.Argument(...)) -> None:
    """Show one deployment."""
    api = options.client()
    options.show(run(lambda: api.deployments.get(name)), columns=DEPLOYMENT_COLUMNS)


@deployments_app.command("events")
@client_command
def deployments_events(options: ClientOptions, name: str = typer.Argument(...)) -> None:
    """A deployment's events, newest first."""
    api = options.client()
    page = run(lambda: api.deployments.events(name, limit=100))
    options.show(page.data, columns=("created_at", "kind", "message"))


@deployments_app.command("stop")
@client_command
def deployments_stop(options: ClientOptions, name: str = typer.Argument(...)) -> None:
    """Stop serving (the deployment stays, stopped)."""
    api = options.client()
    options.show(run(lambda: api.deployments.stop(name)), columns=DEPLOYMENT_COLUMNS)


@deployments_app.command("delete")
@client_command
def deployments_delete(options: ClientOptions, name: str = typer.Argument(...)) -> None:
    """Stop and delete a deployment."""
    api = options.client()
    options.show(run(lambda: api.deployments.delete(name)), columns=DEPLOYMENT_COLUMNS)


@client_command
def predict(
    options: ClientOptions,
    name: str = typer.Argument(..., help="Deployment name"),
    input_json: str = typer.Option(
        ..., "--input", help='JSON: one input, a list of inputs, or {"inputs": [...], "top_k": n}'
    ),
) -> None:
    """Predict with a deployed trained model: `openmaas predict churn-api --input '{"age": 42}'`."""
    try:
        parsed = json.loads(input_json)
    except json.JSONDecodeError as exc:
        fail(f"--input is not valid JSON: {exc}")
    if isinstance(parsed, dict) and "inputs" in parsed:
        inputs, top_k = parsed["inputs"], parsed.get("top_k")
    else:
        inputs, top_k = (parsed if isinstance(parsed, list) else [parsed]), None
    api = options.client()
    result = run(lambda: api.deployments.predict(name, inputs, top_k=top_k))
    if options.as_json:
        emit_json(result)
        return
    console.print(f"[bold]{result.model}[/] ({result.task})")
    for index, prediction in enumerate(result.predictions):
        console.print(f"  {index}: {json.dumps(prediction)}", highlight=False)
