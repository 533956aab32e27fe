"""Model imports: an uploaded Hugging Face folder (zipped), raw ONNX file or GGUF file becomes the
next version of a model.

The upload is streamed into a staging folder inside the artifact store (never held whole in
memory, refused past the size limit), checked and installed as the version's artifact folder by
`hf_import`, `onnx_import` or `gguf_import`, then registered. Nothing half-written stays behind: the staging
folder always goes, and the artifact folder goes when anything after it fails. Knows nothing of
HTTP: the caller hands in the body as chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from openmaas import errors
from openmaas.clock import Clock
from openmaas.db.database import Database
from openmaas.ids import new_id
from openmaas.registry import gguf_import, hf_import, onnx_import
from openmaas.registry import service as registry
from openmaas.schemas.registry import ModelVersionPublic
from openmaas.storage import ArtifactStore, space_for


@dataclass(frozen=True)
class ModelImports:
    """Imports into `store` and `db`, dated by `clock`; an upload, or a folder it unpacks to, is
    at most `max_bytes`."""

    store: ArtifactStore
    db: Database
    clock: Clock
    max_bytes: int

    async def receive(
        self,
        org_id: str,
        body: AsyncIterator[bytes],
        *,
        name: str,
        source_format: str,
        task: str,
        declared_bytes: int | None = None,
    ) -> ModelVersionPublic:
        """Import the upload `body` (`source_format` "huggingface", "onnx" or "gguf") as the next
        version of model `name` of `org_id`. `task` is an ONNX file's task; a folder's config and a
        GGUF file say their own.
        A body that says beforehand it is `declared_bytes` long, over the limit, is refused before
        any of it is read."""
        if declared_bytes is not None and declared_bytes > self.max_bytes:
            raise errors.PayloadTooLarge(
                f"The upload is {declared_bytes} bytes; an import may be at most {self.max_bytes} bytes.",
                param="file",
            )
        version_id = new_id("mv_")
        relative = self.store.model_dir(org_id, version_id)
        with ExitStack() as stack:
            with space_for("this upload", param="file"):
                folder = stack.enter_context(self.store.staged(relative))
            # The upload waits in the staged folder's private scratch (same filesystem: an ONNX
            # file is moved into the artifact, not copied); it goes with the scratch.
            upload = folder.parent / "upload.zip"
            with space_for("this upload", param="file"):
                await self._receive(body, upload)

            def install() -> dict[str, Any]:
                with space_for("this model", param="file"):
                    manifest = self._install(source_format, upload, folder, task)
                    upload.unlink(missing_ok=True)
                    stack.close()  # publish the artifact folder
                return manifest

            manifest = await anyio.to_thread.run_sync(install)
        return await anyio.to_thread.run_sync(
            lambda: self._register(org_id, name, version_id, relative, manifest)
        )

    async def _receive(self, body: AsyncIterator[bytes], path: Path) -> None:
        size = 0
        with open(path, "wb") as out:
            async for chunk in body:
                size += len(chunk)
                if size > self.max_bytes:
                    raise errors.PayloadTooLarge(
                        f"the upload is larger than {self.max_bytes} bytes", param="file"
                    )
                out.write(chunk)

    def _install(self, source_format: str, upload: Path, folder: Path, task: str) -> dict[str, Any]:
        """Check the upload and build the artifact folder from it; returns its manifest."""
        if source_format == "onnx":
            return onnx_import.install(upload, folder, task=task)
        if source_format == "gguf":
            return gguf_import.install(upload, folder)
        return hf_import.install(upload, folder, max_bytes=self.max_bytes)

    def _register(
        self, org_id: str, name: str, version_id: str, relative: str, manifest: dict[str, Any]
    ) -> ModelVersionPublic:
        try:
            with self.db.session() as session:
                model, version = registry.register_version(
                    session,
                    version_id=version_id,
                    org_id=org_id,
                    model_name=name,
                    artifact_path=relative,
                    manifest=manifest,
                    lineage={},
                    now=self.clock.now(),
                )
                return registry.version_public(session, model, version)
        except BaseException:
            self.store.remove(relative)
            raise
