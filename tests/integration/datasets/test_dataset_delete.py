"""`DELETE /v1/datasets/{ref}`: refused while the version is validated or named in a model
version's lineage (nothing deleted then), 404 for another organisation's, and its file gone once
it is deleted."""

from __future__ import annotations

from sqlalchemy import update

from openmaas.datasets.tables import Dataset
from openmaas.ids import new_id
from openmaas.registry import service as registry
from tests.support.served import Served

CSV = b"age,plan,label\n30,basic,yes\n41,pro,no\n"


def _ready(served: Served, dataset_id: str) -> None:
    """As its validation job leaves it."""
    with served.platform.db.session() as session:
        session.execute(update(Dataset).where(Dataset.id == dataset_id).values(status="ready"))


def test_a_dataset_is_deleted_only_when_nothing_depends_on_it(served: Served) -> None:
    platform = served.platform
    acme, globex = served.tenant("acme"), served.tenant("globex")
    with served.client(acme.key) as api, served.client(globex.key) as other:
        kept = api.post("/v1/datasets", params={"name": "kept"}, content=CSV).json()
        busy = api.delete(f"/v1/datasets/{kept['id']}")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "dataset_in_use", busy.text
        assert "being validated" in busy.json()["error"]["message"]
        _ready(served, kept["id"])
        with platform.db.session() as session:
            vid = new_id("mv_")
            registry.register_version(
                session, version_id=vid, org_id=acme.org_id, model_name="churn", artifact_path=f"m/{vid}",
                manifest={"task": "tabular-classification"}, now=platform.clock.now(),
                lineage={"dataset_id": kept["id"], "job_id": None, "parent_version_id": None},
            )  # fmt: skip
        used = api.delete("/v1/datasets/kept:1")
        assert used.status_code == 409 and "churn:1" in used.json()["error"]["message"], used.text
        assert api.get(f"/v1/datasets/{kept['id']}").status_code == 200

        gone = api.post("/v1/datasets", params={"name": "gone"}, content=CSV + b"52,pro,no\n").json()
        _ready(served, gone["id"])
        assert other.delete(f"/v1/datasets/{gone['id']}").status_code == 404  # not theirs
        folder = platform.store.path(platform.store.dataset_dir(acme.org_id, gone["id"]))
        assert folder.is_dir()
        deleted = api.delete("/v1/datasets/gone")
        assert deleted.status_code == 200 and deleted.json()["id"] == gone["id"], deleted.text
        assert not folder.exists()
        assert api.get(f"/v1/datasets/{gone['id']}").status_code == 404
