"""The registry's routes over HTTP: what a bad model name, alias or version number answers."""

from __future__ import annotations

from sqlalchemy import event

from openmaas.ids import new_id
from openmaas.registry import service as registry
from tests.integration.serving.predict_support import artifact, register
from tests.support.served import Served


def test_alias_routes_name_the_field_at_fault(served: Served) -> None:
    """Setting an alias on a model name no model can have answered 422 naming `version`, and a
    version number past 64 bits would reach the database (found by schemathesis)."""
    tenant = served.tenant("acme")
    register(served, tenant, artifact("tabular-classification"), "churn")
    with served.client(tenant.key) as client:
        missing = client.put("/v1/registry/models/%C2%9AQ/aliases/prod", json={"version": 1})
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "model", missing.text
        huge = client.put("/v1/registry/models/churn/aliases/prod", json={"version": 2**64})
        assert huge.status_code == 422 and huge.json()["error"]["param"] == "version", huge.text
        absent = client.put("/v1/registry/models/churn/aliases/prod", json={"version": 999_999_999})
        assert absent.status_code == 404 and absent.json()["error"]["param"] == "version", absent.text
        assert client.put("/v1/registry/models/churn/aliases/prod", json={"version": 1}).status_code == 200
        for ref in ["churn:99999999999999999999", "churn:²", "churn@1x"]:
            response = client.get(f"/v1/registry/versions/{ref}")
            assert response.status_code == 422, (ref, response.text)


def test_model_and_version_lists_read_aliases_once_per_page(served: Served) -> None:
    """A page of models (or versions) costs the same few queries whatever its length: no query per row."""
    tenant = served.tenant("acme")
    platform = served.platform
    statements: list[str] = []

    def add_version(name: str) -> None:  # no artifact: these routes read rows only
        with platform.db.session() as session:
            vid = new_id("mv_")
            registry.register_version(
                session, version_id=vid, org_id=tenant.org_id, model_name=name, artifact_path=f"m/{vid}",
                manifest={"task": "tabular-classification"}, now=platform.clock.now(),
                lineage={"dataset_id": None, "job_id": None, "parent_version_id": None},
            )  # fmt: skip

    def count() -> tuple[int, int, int]:
        """Statements of a models page and of a versions page, and the models listed."""
        statements.clear()
        with served.client(tenant.key) as client:
            models = client.get("/v1/registry/models").json()["data"]
            listed = len(statements)
            statements.clear()
            client.get("/v1/registry/models/m0/versions")
        return listed, len(statements), len(models)

    add_version("m0")

    def listen(*args: object) -> None:  # the registry's reads (not the server's background work)
        if any(table in str(args[2]) for table in ("registered_models", "model_versions", "model_aliases")):
            statements.append(str(args[2]))

    event.listen(platform.db.engine, "before_cursor_execute", listen)
    try:
        count()  # the key's first use reads and stamps it: not the page's cost
        one = count()
        for n in range(1, 6):
            add_version(f"m{n}")
            add_version("m0")
        with served.client(tenant.key) as client:
            for alias, version in (("prod", 1), ("staging", 3)):
                put = client.put(f"/v1/registry/models/m0/aliases/{alias}", json={"version": version})
                assert put.is_success, put.text
            models = {m["name"]: m for m in client.get("/v1/registry/models").json()["data"]}
            versions = client.get("/v1/registry/models/m0/versions").json()["data"]
        assert models["m0"]["aliases"] == {"prod": 1, "staging": 3} and models["m0"]["latest_version"] == 6
        assert {v["version"]: v["aliases"] for v in versions}[3] == ["staging"]
        many = count()
    finally:
        event.remove(platform.db.engine, "before_cursor_execute", listen)
    assert many[2] == 6 and one[:2] == many[:2], (one, many)
