"""The model registry's rules: references, immutable numbered versions, aliases, tags, compare,
deletes refused while aliased, and organisations kept apart."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from openmaas import errors
from openmaas.bootstrap import Platform
from openmaas.ids import new_id
from openmaas.registry import service as registry
from openmaas.registry.refs import ModelRef, parse_ref
from openmaas.tenancy.tables import Organization
from tests.support.platforms import make_platform


def test_references() -> None:
    assert parse_ref("churn") == ModelRef("churn")
    assert parse_ref("churn:3") == ModelRef("churn", version=3)
    assert parse_ref("churn@production") == ModelRef("churn", alias="production")
    for bad in ("", "churn:x", "churn@", ":3", "a/b"):
        with pytest.raises(errors.ValidationFailed) as caught:
            parse_ref(bad)
        assert caught.value.param == "model"


@pytest.fixture
def plat(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    platform = make_platform(tmp_path / "home", database_url)
    with platform.db.session() as session:
        for org in ("org_a", "org_b"):
            session.add(Organization(id=org, name=org, plan="default", created_at=platform.clock.now()))
    yield platform
    platform.close()


def _register(session: Session, plat: Platform, accuracy: float, task: str = "tabular-classification") -> Any:
    manifest = {"task": task, "metrics": {"accuracy": accuracy, "confusion_matrix": [[1, 0], [0, 1]]}}
    return registry.register_version(
        session,
        version_id=new_id("mv_"),
        org_id="org_a",
        model_name="churn",
        artifact_path="models/x",
        manifest=manifest,
        lineage={"dataset_id": "ds_1", "job_id": None, "parent_version_id": None},
        now=plat.clock.now(),
    )[1]


def test_versions_aliases_tags_compare_and_delete(plat: Platform) -> None:
    with plat.db.session() as session:
        assert [_register(session, plat, acc).version for acc in (0.9, 0.95)] == [1, 2]
        registry.set_alias(session, "org_a", "churn", "production", 1, plat.clock.now())
    with plat.db.session() as session:
        assert registry.resolve(session, "org_a", "churn")[1].version == 2  # bare name: the latest
        assert registry.resolve(session, "org_a", "churn@production")[1].version == 1
        tagged = registry.update_tags(session, "org_a", "churn:2", {"owner": "ana", "stage": "qa"})
        assert tagged.tags == {"owner": "ana", "stage": "qa"}
        assert registry.update_tags(session, "org_a", "churn:2", {"stage": None}).tags == {"owner": "ana"}
        versions, metrics = registry.compare(session, "org_a", ["churn:2", "churn@production"])
        assert [v.ref for v in versions] == ["churn:2", "churn:1"]
        assert metrics == {
            "accuracy": {"churn:2": 0.95, "churn:1": 0.9}
        }  # matrices are not side-by-side values
        with pytest.raises(errors.Conflict) as refused:
            registry.delete_version(session, "org_a", "churn:1", plat.version_holders)
        assert "production" in refused.value.message
        registry.set_alias(session, "org_a", "churn", "production", 2, plat.clock.now())
        deleted, path = registry.delete_version(session, "org_a", "churn:1", plat.version_holders)
        assert deleted.ref == "churn:1" and path == "models/x"
        model = registry.model_public(session, registry.get_model(session, "org_a", "churn"))
        assert model.latest_version == 2 and model.aliases == {"production": 2}


def test_other_organisations_and_mismatched_tasks(plat: Platform) -> None:
    with plat.db.session() as session:
        _register(session, plat, 0.9)
        with pytest.raises(errors.NotFound):
            registry.resolve(session, "org_b", "churn:1")
        with pytest.raises(errors.NotFound):
            registry.resolve(session, "org_a", "churn@missing")
        with pytest.raises(errors.Conflict):
            _register(session, plat, 0.5, task="tabular-regression")
        with pytest.raises(errors.ValidationFailed) as bad_alias:
            registry.set_alias(session, "org_a", "churn", "9lives", 1, plat.clock.now())
        assert bad_alias.value.param == "alias"


def test_a_deployment_made_after_the_check_still_stops_the_delete(
    plat: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-use check reads; a deployment committed between it and the delete is caught by the
    deployments' foreign key, answered as the same 409, and nothing is deleted."""
    from openmaas.registry import in_use
    from openmaas.serving.tables import Deployment

    with plat.db.session() as session:
        version = _register(session, plat, 0.9)
        now = plat.clock.now()
        session.add(
            Deployment(
                id=new_id("dep_"),
                org_id="org_a",
                name="api",
                model_ref="churn:1",
                version_id=version.id,
                task=version.task,
                state="ready",
                replicas=1,
                config={},
                created_at=now,
                updated_at=now,
            )
        )
    real = in_use.users_of
    calls: list[str] = []

    def checked_before_the_deployment(
        session: Session, version: Any, holders: Sequence[in_use.VersionHolder]
    ) -> in_use.Users:
        calls.append(version.id)
        return in_use.Users() if len(calls) == 1 else real(session, version, holders)

    monkeypatch.setattr(in_use, "users_of", checked_before_the_deployment)
    for delete in (
        lambda session: registry.delete_version(session, "org_a", "churn:1", plat.version_holders),
        lambda session: registry.delete_model(session, "org_a", "churn", plat.version_holders),
    ):
        calls.clear()
        with plat.db.session() as session, pytest.raises(errors.Conflict) as refused:
            delete(session)
        assert refused.value.code == "version_in_use"
    with plat.db.read_session() as session:
        assert registry.resolve(session, "org_a", "churn:1")[1].id == version.id
