"""`openmaas explain NAME --input '{...}'`: feature attributions from a deployed trained model,
printed as a table of each row's strongest attributions (or the raw JSON with --json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from openmaas.cli.client_options import ClientOptions, client_command
from openmaas.cli.output import console, emit_json, fail, run
from openmaas.schemas.explain import Explanation


@client_command
def explain(
    options: ClientOptions,
    name: str = typer.Argument(..., help="Deployment name"),
    input_json: str | None = typer.Option(None, "--input", help="JSON: one input or a list of inputs"),
    inputs_file: Path | None = typer.Option(
        None, "--inputs-file", help="A JSON file holding a list of inputs"
    ),
    target: str | None = typer.Option(None, "--target", help="Class label to explain (default: predicted)"),
    steps: int | None = typer.Option(None, "--steps", help="Integrated-gradients steps (default 50)"),
    top: int = typer.Option(5, "--top", min=1, help="Attributions shown per row"),
) -> None:
    """Explain predictions: `openmaas explain churn-api --input '{"age": 42, "plan": "pro"}'`."""
    inputs = _inputs(input_json, inputs_file)
    api = options.client()
    result = run(lambda: api.deployments.explain(name, inputs, target=target, steps=steps))
    if options.as_json:
        emit_json(result)
        return
    console.print(f"[bold]{result.model}[/] ({result.task}, {result.method}, {result.steps} steps)")
    for index, explained in enumerate(result.explanations):
        console.print(_table(index, explained, top))


def _inputs(input_json: str | None, inputs_file: Path | None) -> list[Any]:
    if (input_json is None) == (inputs_file is None):
        fail("give exactly one of --input and --inputs-file")
    try:
        text = input_json if input_json is not None else inputs_file.read_text()  # type: ignore[union-attr]
        parsed = json.loads(text)
    except OSError as exc:
        fail(f"cannot read --inputs-file: {exc}")
    except json.JSONDecodeError as exc:
        fail(f"{'--input' if input_json is not None else '--inputs-file'} is not valid JSON: {exc}")
    if isinstance(parsed, dict) and "inputs" in parsed:
        parsed = parsed["inputs"]
    return parsed if isinstance(parsed, list) else [parsed]


def top_attributions(attributions: dict[str, Any], top: int) -> list[tuple[str, float]]:
    """The strongest (by magnitude) named scores of one row: features, tokens, or pixels/frames."""
    if "tokens" in attributions:
        pairs = list(zip(attributions["tokens"], attributions["scores"], strict=True))
    elif "pixels" in attributions:
        pairs = [(f"pixel y={p['y']} x={p['x']}", p["score"]) for p in attributions["pixels"]["top_pixels"]]
    elif "frames" in attributions:
        pairs = [(f"frame {i}", score) for i, score in enumerate(attributions["frames"])]
    else:
        pairs = [(str(k), float(v)) for k, v in attributions.items()]
    return sorted(pairs, key=lambda pair: abs(pair[1]), reverse=True)[:top]


def _table(index: int, explained: Explanation, top: int) -> Table:
    prediction = explained.prediction.get("label", explained.prediction.get("value"))
    title = f"row {index}: predicted {prediction}; explaining {explained.target or 'the value'}"
    table = Table(title=title, caption=f"convergence delta {explained.convergence_delta:.3g}")
    table.add_column("input")
    table.add_column("attribution", justify="right")
    for what, score in top_attributions(explained.attributions, top):
        table.add_row(what, f"{score:+.4g}", style="green" if score > 0 else "red")
    return table
