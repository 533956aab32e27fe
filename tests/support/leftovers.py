"""What requests leave behind on a platform: the files under its home and the rows of the tables
that requests create, so a test can assert that a refused request left nothing.

The database's own files (SQLite and its journals) and logs are not counted: they change with every
request. Nor are the artifact store's folders per kind and organisation (`artifacts/datasets/org_…`):
the store keeps them once made (removing one could race another upload making its folder inside)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import func, select

from openmaas.billing.tables import CreditTransaction, Listing, Pricebook
from openmaas.bootstrap import Platform
from openmaas.datasets.file_tables import StoredFile
from openmaas.datasets.tables import Dataset
from openmaas.jobs.tables import Job
from openmaas.metering.tables import UsageRecord
from openmaas.registry.tables import ModelAlias, ModelVersion, RegisteredModel
from openmaas.serving.tables import Deployment
from openmaas.tenancy.tables import ApiKey, IdempotencyRecord, Organization

# What a request may create: a refused one creates none of these.
COUNTED = (
    Dataset,
    StoredFile,
    RegisteredModel,
    ModelVersion,
    ModelAlias,
    Job,
    Deployment,
    IdempotencyRecord,
    UsageRecord,
    Organization,
    ApiKey,
    Pricebook,
    Listing,
    CreditTransaction,
)
_NOT_COUNTED = re.compile(r"(\.db|\.db-wal|\.db-shm|\.db-journal|\.log)$|(^|/)logs(/|$)")
_STORE_FOLDERS = re.compile(r"^artifacts(/[^/]+){0,2}$")


@dataclass(frozen=True)
class Snapshot:
    paths: frozenset[str]  # files and folders under home, relative to it
    rows: dict[str, int]  # table → row count


def snapshot(platform: Platform) -> Snapshot:
    home = platform.settings.home
    paths = frozenset(
        relative
        for path in home.rglob("*")
        if not _NOT_COUNTED.search(relative := path.relative_to(home).as_posix())
        and not (_STORE_FOLDERS.match(relative) and path.is_dir())
    )
    with platform.db.read_session() as session:
        rows = {
            table.__tablename__: session.scalar(select(func.count()).select_from(table)) or 0
            for table in COUNTED
        }
    return Snapshot(paths, rows)


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """What differs between two snapshots, in words (empty: nothing)."""
    found = [f"new: {path}" for path in sorted(after.paths - before.paths)]
    found += [f"gone: {path}" for path in sorted(before.paths - after.paths)]
    found += [
        f"{table}: {before.rows[table]} rows, now {count}"
        for table, count in after.rows.items()
        if count != before.rows[table]
    ]
    return found


@contextmanager
def nothing_left(platform: Platform, settle_s: float = 0.0) -> Iterator[None]:
    """Assert that the block leaves no new files under home and no new rows. `settle_s`: how long
    to wait for clean-up that runs after the answer (a client that went away mid-body)."""
    before = snapshot(platform)
    yield
    deadline = time.monotonic() + settle_s
    while (left := changes(before, snapshot(platform))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left behind: {left}"
