"""The `openmaas` command line (Typer + Rich). Imports stay lazy so commands start fast."""
