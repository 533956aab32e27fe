"""The tasks `POST /v1/training_jobs` documents are the ones the platform trains."""

from __future__ import annotations

from openmaas.schemas.training import TRAINED_TASKS
from openmaas.tasks import Task


def test_the_documented_tasks_are_the_trained_ones() -> None:
    assert list(TRAINED_TASKS) == [task.value for task in Task]
