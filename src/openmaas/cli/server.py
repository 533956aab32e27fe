"""Commands that run on the server's machine: `serve` and `db`."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import typer

from openmaas.cli.output import console, fail

if TYPE_CHECKING:
    from openmaas.bootstrap import Platform

_NEW_KEY = """python -c 'import secrets; print("om-" + secrets.token_urlsafe(32))'"""

db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)


def open_platform() -> Platform:
    """The platform the settings describe; a setting it cannot use ends the command, naming it."""
    from sqlalchemy.exc import ArgumentError

    from openmaas.bootstrap import build_platform
    from openmaas.config import Settings

    settings = Settings()
    try:
        return build_platform(settings)
    except ArgumentError as exc:
        fail(f"OPENMAAS_DATABASE_URL is not a database URL ({exc}); e.g. postgresql+psycopg://user@host/db")
    except ValueError as exc:  # the settings' own checks, e.g. an artifact store it cannot open
        fail(str(exc))


def serve(
    host: str = typer.Option(None, help="Address to bind (default 127.0.0.1, or OPENMAAS_HOST)"),
    port: int = typer.Option(None, help="Port (default 8000, or OPENMAAS_PORT)"),
    migrate_db: bool = typer.Option(
        None, "--migrate/--no-migrate", help="Apply pending migrations first (default: on for SQLite)"
    ),
    with_worker: bool = typer.Option(
        None,
        "--worker/--no-worker",
        help="Run a job worker in this process too (default: on, or OPENMAAS_WORKER_IN_PROCESS); "
        "--no-worker for an API server of a cluster, whose jobs run in `openmaas worker` processes",
    ),
) -> None:
    """Start the API server (embedded mode: API, job worker and replicas in one process)."""
    import uvicorn

    from openmaas import logs
    from openmaas.api.app import create_app
    from openmaas.api.http_protocol import limited_http_protocol
    from openmaas.bootstrap import ensure_admin_key
    from openmaas.db import migrate

    platform = open_platform()
    settings = platform.settings
    worker_here = settings.worker_in_process if with_worker is None else with_worker
    logs.configure(settings.log_format, settings.log_level)
    try:
        state = migrate.check_not_too_new(platform.db)
        if not state.is_current:
            if (migrate_db is None and platform.db.is_sqlite) or migrate_db:
                migrate.upgrade(platform.db)
            else:
                fail("The database schema is not current: run `openmaas db upgrade` first.")
    except migrate.DatabaseTooNew as exc:
        fail(str(exc))
    try:
        new_key = ensure_admin_key(platform)
    except ValueError as exc:
        fail(f"{exc}. Unset it and the server creates one on first start, or set one made by {_NEW_KEY}")
    host = host or settings.host
    port = port or settings.port
    console.print(f"[bold green]OpenMaaS[/] serving on [bold]http://{host}:{port}[/]")
    console.print(f"  console: http://{host}:{port}/console (sign in with a key)")
    console.print(f"  home: {settings.home}   database: {_safe_url(platform.db.url)}")
    if new_key:
        console.print(f"  [bold]admin key (shown once):[/] {new_key}")
        console.print(f"  also saved to {settings.admin_key_path} (mode 0600)")
    else:
        console.print(f"  admin key: see {settings.admin_key_path}")
    if not worker_here:
        console.print("  no job worker here: jobs run in `openmaas worker` processes")
    from openmaas.cli.worker import embedded_worker

    # A Ctrl-C before uvicorn's event loop runs leaves its coroutine unawaited: not worth a warning.
    warnings.filterwarnings("ignore", "coroutine 'Server.serve' was never awaited", RuntimeWarning)
    with embedded_worker(platform, enabled=worker_here):
        # log_config=None: uvicorn's own records go through our handler (`logs.configure`) too.
        uvicorn.run(
            create_app(platform),
            host=host,
            port=port,
            http=limited_http_protocol(settings),
            access_log=settings.access_log,
            log_level="warning",
            log_config=None,
        )


def _safe_url(url: str) -> str:
    """The database URL without its password, fit for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("heads")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from openmaas.db import migrate

    platform = open_platform()
    try:
        migrate.upgrade(platform.db, revision)
    except migrate.DatabaseTooNew as exc:
        fail(str(exc))
    console.print(f"Database at {', '.join(migrate.schema_state(platform.db).current) or 'base'}.")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base")) -> None:
    """Revert migrations down to REVISION."""
    from openmaas.db import migrate

    platform = open_platform()
    migrate.downgrade(platform.db, revision)
    console.print(f"Database at {', '.join(migrate.schema_state(platform.db).current) or 'base'}.")


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of the database and of this code."""
    from openmaas.db import migrate

    state = migrate.schema_state(open_platform().db)
    console.print(f"database: {', '.join(state.current) or 'base'}   code: {', '.join(state.head)}")
    if state.unknown:
        fail("The database is newer than this code.")
