"""SDK resource for OpenAI's files: `client.files.upload("train.jsonl", purpose="fine-tune")`,
list, get, download the content, delete."""

from __future__ import annotations

from pathlib import Path

from openmaas.schemas.files import FileDeleted, FilePublic
from openmaas.schemas.pages import Page
from openmaas.sdk.calls import Call, Download, Upload
from openmaas.sdk.resource import Resource, S, endpoint
from openmaas.sdk.uploads import Progress


class Files(Resource[S]):
    @endpoint
    def upload(self, path: str | Path, *, purpose: str, progress: Progress | None = None) -> Call[FilePublic]:
        """Stream a file as a multipart form (as OpenAI's `files.create` does); a `fine-tune` file
        with problems is refused with each named by its line (`error.issues`)."""
        upload = Upload(Path(path), "multipart/form-data", progress, form={"purpose": purpose})
        return Call("POST", "/v1/files", FilePublic, upload=upload)

    @endpoint
    def list(
        self,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        order: str | None = None,
    ) -> Call[Page[FilePublic]]:
        params = {"purpose": purpose, "limit": limit, "after": after, "order": order}
        return Call("GET", "/v1/files", Page[FilePublic], params=params)

    @endpoint
    def get(self, file_id: str) -> Call[FilePublic]:
        return Call("GET", f"/v1/files/{file_id}", FilePublic)

    @endpoint
    def download(self, file_id: str, dest: str | Path, progress: Progress | None = None) -> Download:
        """Save the file's content at `dest`."""
        return Download(f"/v1/files/{file_id}/content", Path(dest), progress)

    @endpoint
    def delete(self, file_id: str) -> Call[FileDeleted]:
        return Call("DELETE", f"/v1/files/{file_id}", FileDeleted)
