"""Model imports without HTTP (`registry.imports.ModelImports`): the upload arrives in chunks and
becomes the next version; an upload over the limit, or one whose registration fails, leaves no
files behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy.exc import IntegrityError

from openmaas import errors
from openmaas.bootstrap import Platform
from openmaas.registry.imports import ModelImports
from openmaas.schemas.registry import ModelVersionPublic
from openmaas.schemas.tenancy import OrganizationCreate
from openmaas.tenancy import service as tenancy


def _onnx_bytes() -> bytes:
    """y = x @ w, built with onnx.helper."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    weight = numpy_helper.from_array(np.ones((2, 1), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "linear", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


async def _chunks(data: bytes, size: int = 64) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _import(imports: ModelImports, org_id: str, data: bytes) -> ModelVersionPublic:
    async def run() -> ModelVersionPublic:
        return await imports.receive(
            org_id, _chunks(data), name="linear", source_format="onnx", task="tensor-inference"
        )

    return anyio.run(run)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def org_id(platform: Platform) -> str:
    with platform.db.session() as session:
        return tenancy.create_organization(session, OrganizationCreate(name="acme"), platform.clock.now()).id


def test_chunks_become_the_next_version(platform: Platform, org_id: str) -> None:
    imports = ModelImports(platform.store, platform.db, platform.clock, max_bytes=1 << 20)
    first = _import(imports, org_id, _onnx_bytes())
    second = _import(imports, org_id, _onnx_bytes())
    assert (first.version, second.version) == (1, 2)
    assert first.id.startswith("mv_")  # every model version's prefix, however it was made
    folder = platform.store.path(platform.store.model_dir(org_id, second.id))
    assert (folder / "model.onnx").read_bytes() == _onnx_bytes()
    assert not list(platform.store.path(".").glob(".import-*"))  # the staging folder went


def test_an_upload_over_the_limit_leaves_nothing(platform: Platform, org_id: str) -> None:
    data = _onnx_bytes()
    imports = ModelImports(platform.store, platform.db, platform.clock, max_bytes=len(data) - 1)
    with pytest.raises(errors.PayloadTooLarge):
        _import(imports, org_id, data)
    assert _files(platform.store.root) == []


def test_a_failed_registration_leaves_nothing(platform: Platform) -> None:
    imports = ModelImports(platform.store, platform.db, platform.clock, max_bytes=1 << 20)
    with pytest.raises(IntegrityError):
        _import(imports, "org_nothing", _onnx_bytes())  # installed, then refused by the database
    assert _files(platform.store.root) == []
