"""The hostile-input suite's server: one platform per database kind for the whole package, with
small limits, served over the HTTP protocol `openmaas serve` runs. Each case makes its own tenant
and checks with `nothing_left` (tests/support/leftovers.py) that a refused request left no file
and no row; after every module, the server's own count of 5xx answers is what it was before."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from openmaas.api.app import create_app
from openmaas.api.http_protocol import limited_http_protocol
from tests.integration.hostile.wire import server_errors
from tests.integration.jobs.harness import FAST
from tests.support.databases import DATABASE_KINDS, POSTGRES_URL
from tests.support.platforms import make_platform, migrated_postgres_database
from tests.support.served import Served, Tenant
from tests.support.server import running_server

LIMITS = {
    "max_body_bytes": 256 * 1024,  # a 100,000-level JSON array (200 KB) reaches the parser
    "max_dataset_bytes": 256 * 1024,
    "max_import_bytes": 4 * 1024 * 1024,
    "max_header_bytes": 8 * 1024,
    "max_header_count": 32,
}
_names = itertools.count()


# Modules whose input is refused before any database (header limits in the HTTP protocol; request
# validation of inference, whose metered path runs on both databases in tests/integration/serving)
# run on SQLite only: the rest store or look up what they send, where PostgreSQL refuses what
# SQLite keeps (NUL in text), so they run on both.
_BEFORE_ANY_DATABASE = {"test_headers", "test_inference"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "served" in metafunc.fixturenames:
        module = metafunc.module.__name__.rpartition(".")[2]
        kinds = ["sqlite"] if module in _BEFORE_ANY_DATABASE else DATABASE_KINDS
        metafunc.parametrize("served", kinds, indirect=True, scope="package")


@pytest.fixture(scope="package")
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("hostile")
    home = folder / "home"
    with _database(request.param, folder) as url:
        platform = make_platform(home, url, **FAST, **LIMITS)
        assert platform.new_admin_key is not None
        try:
            with running_server(
                create_app(platform), http=limited_http_protocol(platform.settings)
            ) as address:
                yield Served(address, platform, platform.new_admin_key)
        finally:
            platform.close()


def _database(kind: str, folder: Path) -> AbstractContextManager[str]:
    if kind == "postgresql":
        assert POSTGRES_URL is not None
        return migrated_postgres_database(POSTGRES_URL)
    return contextlib.nullcontext(f"sqlite:///{folder / 'openmaas.db'}")  # beside home, not in it


@pytest.fixture(scope="module", autouse=True)
def no_server_errors(served: Served) -> Iterator[None]:
    """Whatever a module's cases send, the server never answers with a failure of its own (5xx).
    Checked per module: /metrics costs a few database reads."""
    before = server_errors(served.url)
    yield
    assert server_errors(served.url) == before, "the server answered 5xx (see its log)"


@pytest.fixture
def tenant(served: Served) -> Tenant:
    """A fresh organisation and key for this case (the server is shared by the package)."""
    return served.tenant(f"hostile-{next(_names)}")


@pytest.fixture
def api(served: Served, tenant: Tenant) -> Iterator[httpx.Client]:
    with served.client(tenant.key) as client:
        yield client
