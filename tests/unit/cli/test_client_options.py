"""`@client_command`: the shared --url, --key and --json options reach a command as one value."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from openmaas.cli.client_options import ClientOptions, client_command

app = typer.Typer()
seen: list[tuple[ClientOptions, str, int]] = []


@app.command("show")
@client_command
def show_thing(options: ClientOptions, name: str = typer.Argument(...), limit: int = typer.Option(5)) -> None:
    seen.append((options, name, limit))


@app.command("save")
@client_command(json=False)
def save_thing(options: ClientOptions) -> None:
    seen.append((options, "", 0))


def test_the_shared_options_arrive_with_the_command_s_own() -> None:
    seen.clear()
    result = CliRunner().invoke(
        app, ["show", "x", "--limit", "2", "--url", "http://om", "--key", "om-1", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert seen == [(ClientOptions("http://om", "om-1", as_json=True), "x", 2)]

    CliRunner().invoke(app, ["show", "y"])
    assert seen[-1] == (ClientOptions(None, None, as_json=False), "y", 5)


def test_json_false_leaves_out_the_json_flag() -> None:
    assert "--json" in CliRunner().invoke(app, ["show", "--help"]).output
    assert "--json" not in CliRunner().invoke(app, ["save", "--help"]).output
    assert CliRunner().invoke(app, ["save", "--json"]).exit_code != 0


def test_a_command_without_client_options_first_is_refused() -> None:
    with pytest.raises(TypeError, match="ClientOptions"):

        @client_command
        def wrong(name: str) -> None: ...
