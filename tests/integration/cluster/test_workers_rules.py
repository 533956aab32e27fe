"""`workers` on a training job is checked when the job is created: more than one needs the ray
executor and a task that trains data-parallel; the answer is a 422 naming `workers`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.jobs.harness import fast_server
from tests.support.served import Served

BODY = {"task": "tabular-classification", "dataset": "cancer", "target": "label"}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    home = tmp_path_factory.mktemp("home")
    with fast_server(home, f"sqlite:///{home / 'openmaas.db'}") as served:
        yield served, served.tenant("acme").key


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**BODY, "workers": 2}, "workers"),
        ({**BODY, "workers": 0}, "workers"),
        ({**BODY, "gpus_per_worker": 1}, "gpus_per_worker"),
        ({**BODY, "cpus_per_worker": 0}, "cpus_per_worker"),
    ],
)
def test_workers_on_the_local_executor_are_refused(
    local: tuple[Served, str], body: dict[str, object], param: str
) -> None:
    served, key = local
    with served.client(key) as api:
        answer = api.post("/v1/training_jobs", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["param"] == param
    if body.get("workers") == 2:
        assert "ray executor" in error["message"] and "OPENMAAS_EXECUTOR=ray" in error["message"]


def test_only_tabular_tasks_train_on_several_workers(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'openmaas[cluster]'")
    home = tmp_path / "home"
    with fast_server(home, f"sqlite:///{home / 'openmaas.db'}", executor="ray") as served:
        tenant = served.tenant("acme")
        with served.client(tenant.key) as api:
            body = {"task": "text-classification", "dataset": "reviews", "workers": 2}
            answer = api.post("/v1/training_jobs", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["param"] == "workers"
    assert "tabular-classification, tabular-regression" in answer.json()["error"]["message"]
