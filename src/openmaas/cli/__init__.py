"""The `openmaas` command line (Typer + Rich). Imports stay lazy so commands start fast."""

from __future__ import annotations


def main() -> None:
    """The `openmaas` program (its commands are in `openmaas.cli.main`)."""
    try:
        from openmaas.cli.main import run
    except KeyboardInterrupt:  # Ctrl-C while the commands still import: quiet, as it is later
        raise SystemExit(130) from None
    run()
