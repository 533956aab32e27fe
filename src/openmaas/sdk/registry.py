"""SDK resource for the model registry: `client.registry.version("churn@production")`,
`client.registry.set_alias("churn", "production", 3)`, `client.registry.download(ref, "m.zip")`."""

from __future__ import annotations

from pathlib import Path

from openmaas.schemas.pages import Page
from openmaas.schemas.registry import Comparison, ModelPublic, ModelVersionPublic
from openmaas.sdk.calls import Call, Download
from openmaas.sdk.resource import Resource, S, endpoint
from openmaas.sdk.uploads import Progress


class Registry(Resource[S]):
    @endpoint
    def models(self, *, limit: int | None = None, after: str | None = None) -> Call[Page[ModelPublic]]:
        return Call("GET", "/v1/registry/models", Page[ModelPublic], params={"limit": limit, "after": after})

    @endpoint
    def model(self, name: str) -> Call[ModelPublic]:
        return Call("GET", f"/v1/registry/models/{name}", ModelPublic)

    @endpoint
    def versions(
        self, name: str, *, limit: int | None = None, after: str | None = None
    ) -> Call[Page[ModelVersionPublic]]:
        params = {"limit": limit, "after": after}
        return Call("GET", f"/v1/registry/models/{name}/versions", Page[ModelVersionPublic], params=params)

    @endpoint
    def version(self, ref: str) -> Call[ModelVersionPublic]:
        """`name`, `name:3` or `name@alias`, with its manifest."""
        return Call("GET", f"/v1/registry/versions/{ref}", ModelVersionPublic)

    @endpoint
    def compare(self, refs: list[str]) -> Call[Comparison]:
        return Call("GET", "/v1/registry/compare", Comparison, params={"refs": refs})

    @endpoint
    def set_alias(self, name: str, alias: str, version: int) -> Call[ModelPublic]:
        path = f"/v1/registry/models/{name}/aliases/{alias}"
        return Call("PUT", path, ModelPublic, {"version": version})

    @endpoint
    def remove_alias(self, name: str, alias: str) -> Call[ModelPublic]:
        return Call("DELETE", f"/v1/registry/models/{name}/aliases/{alias}", ModelPublic)

    @endpoint
    def tag(self, ref: str, tags: dict[str, str | None]) -> Call[ModelVersionPublic]:
        """Set tags; a `None` value removes that tag."""
        return Call("PATCH", f"/v1/registry/versions/{ref}", ModelVersionPublic, {"tags": tags})

    @endpoint
    def delete(self, ref: str) -> Call[ModelVersionPublic]:
        return Call("DELETE", f"/v1/registry/versions/{ref}", ModelVersionPublic)

    @endpoint
    def delete_model(self, name: str) -> Call[ModelPublic]:
        """The model with all its versions (409 `version_in_use` while any is listed or served)."""
        return Call("DELETE", f"/v1/registry/models/{name}", ModelPublic)

    @endpoint
    def download(self, ref: str, dest: str | Path, progress: Progress | None = None) -> Download:
        """Save the version's artifact folder as a zip file at `dest`."""
        return Download(f"/v1/registry/versions/{ref}/download", Path(dest), progress)
