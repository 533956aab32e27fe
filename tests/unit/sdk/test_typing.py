"""Users' type checkers see precise results: `Client` methods return the model, `AsyncClient`
methods a coroutine of it, event streams an `Iterator` or an `AsyncIterator` (mypy on a snippet;
a line ending in `# E: code` must draw exactly that error, every other line none)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import openmaas

SNIPPET = """\
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, assert_type

from openmaas import AsyncClient, Client
from openmaas.schemas.jobs import JobEventPublic, JobPublic
from openmaas.schemas.pages import Page
from openmaas.schemas.tenancy import ApiKey, Organization
from openmaas.sdk.client import iterate


def blocking(client: Client) -> None:
    assert_type(client.admin.organizations.create("acme", plan="pro"), Organization)
    assert_type(client.admin.api_keys("acme").list(limit=2), Page[ApiKey])
    assert_type(client.jobs.stream_events("job_1", after=3), Iterator[JobEventPublic])
    assert_type(iterate(client.api_keys.list), Iterator[ApiKey])
    client.admin.organizations.create("acme", plann="pro")  # E: call-arg


async def awaited(client: AsyncClient) -> None:
    created = client.admin.organizations.create("acme")
    _ = assert_type(created, Coroutine[Any, Any, Organization])
    assert_type(await created, Organization)
    assert_type(await client.training_jobs.wait("job_1"), JobPublic)
    assert_type(client.jobs.stream_events("job_1"), AsyncIterator[JobEventPublic])
    client.me()  # E: unused-coroutine
"""


@pytest.mark.slow
def test_mypy_types_both_clients_precisely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mypy = pytest.importorskip("mypy.api")
    monkeypatch.setenv("MYPYPATH", str(Path(openmaas.__file__).parents[1]))  # this tree's openmaas
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    flags = ["--config-file", "", "--python-version", "3.11", "--cache-dir", str(tmp_path / "cache")]

    report, _, _ = mypy.run([*flags, str(snippet)])

    found = {(int(m[1]), m[2]) for m in re.finditer(r"snippet\.py:(\d+): error: .*\[([\w-]+)\]", report)}
    expected = {
        (number, line.rpartition("# E: ")[2])
        for number, line in enumerate(SNIPPET.splitlines(), start=1)
        if "# E: " in line
    }
    assert found == expected, report
