"""OpenAI's files (`/v1/files`): receive a multipart upload streamed into the artifact store,
validate a `fine-tune` file's chat format, and list, find, read and delete an organisation's files;
`store_output_file` is how the platform itself writes `fine-tune-results` and `batch_output`.

A file's bytes live in the organisation's dataset folder (`store.dataset_dir(org, file_id)`), so
the daily storage sample bills them like datasets. Nothing half-written stays: the bytes are
written through `store.staged` and published only after every check, the folder goes when
anything fails, and the row exists only once the bytes do. Knows nothing of HTTP.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.clock import Clock
from openmaas.datasets.chat_format import ChatFileReport, validate_chat_file
from openmaas.datasets.file_tables import StoredFile
from openmaas.datasets.multipart import read_form
from openmaas.datasets.uploads import blocking_chunks
from openmaas.db.database import Database
from openmaas.ids import new_id
from openmaas.pagination import paginate
from openmaas.schemas.files import OUTPUT_PURPOSES, UPLOAD_PURPOSES, FileDeleted, FilePublic
from openmaas.schemas.pages import Page
from openmaas.storage import ArtifactStore, space_for

CONTENT = "content"  # the file's bytes, inside its folder
FINE_TUNE = "fine-tune"


def file_public(row: StoredFile) -> FilePublic:
    return FilePublic(
        id=row.id,
        bytes=row.bytes,
        created_at=int(row.created_at.timestamp()),
        filename=row.filename,
        purpose=row.purpose,  # type: ignore[arg-type]
    )


def get_file(session: Session, org_id: str, file_id: str, param: str = "file_id") -> StoredFile:
    """The organisation's file `file_id`; another organisation's answers 404 like a missing one."""
    row = session.scalar(select(StoredFile).where(StoredFile.org_id == org_id, StoredFile.id == file_id))
    if row is None:
        raise errors.NotFound(f"No such file: {file_id!r}.", param=param)
    return row


def list_files(
    session: Session, org_id: str, *, purpose: str | None, limit: int, after: str | None, ascending: bool
) -> Page[FilePublic]:
    query = select(StoredFile).where(StoredFile.org_id == org_id)
    if purpose is not None:
        query = query.where(StoredFile.purpose == purpose)
    return paginate(
        session, query, StoredFile.id, limit=limit, after=after, to_public=file_public, ascending=ascending
    )


def delete_file(db: Database, store: ArtifactStore, org_id: str, file_id: str) -> FileDeleted:
    """Delete the row first, then the bytes: a crash between leaves unreferenced bytes, never a
    listed file without content."""
    with db.session() as session:
        row = get_file(session, org_id, file_id)
        folder = str(Path(row.path).parent)
        session.delete(row)
    store.remove(folder)
    return FileDeleted(id=file_id)


def check_purpose(purpose: str | None) -> str:
    if purpose is None:
        raise errors.ValidationFailed("The form needs a 'purpose' field.", param="purpose")
    if purpose in OUTPUT_PURPOSES:
        raise errors.InvalidRequest(
            f"Files with purpose {purpose!r} are written by the platform; upload one of "
            f"{', '.join(UPLOAD_PURPOSES)}.",
            param="purpose",
        )
    if purpose not in UPLOAD_PURPOSES:
        raise errors.InvalidRequest(
            f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}, not {purpose!r}.", param="purpose"
        )
    return purpose


def _refuse_invalid(report: ChatFileReport) -> None:
    issues = [
        {"code": i.code, "message": i.message, "line": i.line, "severity": i.severity.value}
        for i in report.issues
    ]
    first = "; ".join(f"line {i.line}: {i.message}" if i.line else i.message for i in report.issues[:5])
    more = f" (and {len(issues) - 5} more, listed in error.issues)" if len(issues) > 5 else ""
    raise errors.InvalidFile(
        f"The fine-tune file has {len(issues)}{'+' if report.issues_truncated else ''} problem(s): "
        f"{first}{more}.",
        issues=issues,
        param="file",
    )


def _insert(
    session: Session, *, file_id: str, org_id: str, purpose: str, filename: str, size: int, path: str,
    examples: int | None, now: datetime,
) -> StoredFile:  # fmt: skip
    row = StoredFile(
        id=file_id,
        org_id=org_id,
        purpose=purpose,
        filename=filename,
        bytes=size,
        path=path,
        examples=examples,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class FileUploads:
    """Uploads into `store` and `db`, dated by `clock`, at most `max_bytes` each."""

    store: ArtifactStore
    db: Database
    clock: Clock
    max_bytes: int

    async def receive(
        self, org_id: str, body: AsyncIterator[bytes], *, content_type: str, declared_bytes: int | None
    ) -> FilePublic:
        """Store the file part of a multipart body with its `purpose`; a `fine-tune` file that is
        not valid chat-format JSONL is refused with every problem and its line."""
        if declared_bytes is not None and declared_bytes > self.max_bytes + 64 * 1024:
            raise errors.PayloadTooLarge(
                f"The upload is {declared_bytes} bytes; a file may be at most {self.max_bytes} bytes.",
                param="file",
            )
        file_id = new_id("file-")
        relative = self.store.dataset_dir(org_id, file_id)
        try:
            return await anyio.to_thread.run_sync(
                lambda: self._store_upload(org_id, file_id, relative, body, content_type)
            )
        except BaseException:
            self.store.remove(relative)
            raise

    def _store_upload(
        self, org_id: str, file_id: str, relative: str, body: AsyncIterator[bytes], content_type: str
    ) -> FilePublic:
        # Published only once the form was read whole and the file accepted.
        with self.store.staged(f"{relative}/{CONTENT}") as staging:
            with space_for("this upload", param="file"), open(staging, "wb") as out:
                form = read_form(
                    blocking_chunks(body), content_type, out, file_field="file", max_file_bytes=self.max_bytes
                )
            purpose = check_purpose(form.fields.get("purpose"))
            if form.filename is None:
                raise errors.ValidationFailed("The form needs a 'file' part.", param="file")
            examples = None
            if purpose == FINE_TUNE:
                report = validate_chat_file(staging)
                if not report.ok:
                    _refuse_invalid(report)
                examples = report.examples
        with self.db.session() as session:
            row = _insert(
                session,
                file_id=file_id,
                org_id=org_id,
                purpose=purpose,
                filename=form.filename,
                size=form.file_bytes,
                path=f"{relative}/{CONTENT}",
                examples=examples,
                now=self.clock.now(),
            )
            return file_public(row)


def store_output_file(
    session: Session,
    store: ArtifactStore,
    *,
    org_id: str,
    purpose: str,
    filename: str,
    source: Path,
    now: datetime,
) -> FilePublic:
    """A file the platform writes (a job's results, a batch's output), copied from `source`; the
    row is added to `session`, so it is kept only if the caller's transaction commits."""
    if purpose not in OUTPUT_PURPOSES:
        raise ValueError(f"{purpose!r} is not an output purpose")
    file_id = new_id("file-")
    relative = store.dataset_dir(org_id, file_id)
    try:
        with store.staged(f"{relative}/{CONTENT}") as staging:
            shutil.copyfile(source, staging)
            size = staging.stat().st_size
        row = _insert(
            session,
            file_id=file_id,
            org_id=org_id,
            purpose=purpose,
            filename=filename,
            size=size,
            path=f"{relative}/{CONTENT}",
            examples=None,
            now=now,
        )
    except BaseException:
        store.remove(relative)
        raise
    return file_public(row)
