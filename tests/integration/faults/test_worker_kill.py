"""A worker killed with SIGKILL mid-training loses nothing: once its lease expires another worker
takes the job over, resumes it from the last checkpoint the killed one saved (the job's events say
so, and no epoch before it is trained again) and succeeds; the killed attempt registered nothing.
Its compute is billed once: per one-second interval of each attempt, never more than the attempt
ran (the killed worker's last interval is lost, not billed twice).

Two `openmaas worker` processes run, as in a cluster: whichever holds the training job is killed, and
the other takes it over. Both start at once: a worker warms up (imports torch and the trainers
into its job forkserver, one process on one core) before it claims anything, and the survivor's
warm-up, had it started later, would have been what the takeover waited for, not the lease."""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from openmaas.jobs.tables import Job
from openmaas.training.artifact import load_artifact
from openmaas.training.predictor import ClassPrediction
from tests.data.builders import breast_cancer_csv
from tests.integration.faults.conftest import Figures
from tests.integration.jobs.harness import (
    METER_S,
    billed_attempts,
    fast_server,
    fast_worker_env,
    job_in,
    upload,
    wait_for,
)
from tests.support.served import Served
from tests.support.workers import start_worker

# As the fine-tune and optimisation kill tests: heartbeats every 0.5 s keep it, and the survivor
# takes the job over this long after the kill.
LEASE_S = 3.0
# The kill comes at the second epoch's checkpoint (an epoch takes ~0.1 s on an idle machine, a
# second on a loaded one): so many epochs that it always lands mid-training, even on an idle
# machine (the test polls every 0.1 s, and kills within a few of them), and no more, since the
# survivor trains all those after the checkpoint.
EPOCHS = 20
TRAINING = {
    "task": "tabular-classification",
    "dataset": "cancer",
    "target": "label",
    # A checkpoint every epoch: the default schedule may save only at the end of so short a run.
    "params": {"epochs": EPOCHS, "batch_size": 32, "hidden_sizes": [64], "checkpoint_overhead": 0},
}


@contextmanager
def worker_process(served: Served, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_worker(served.platform.settings, log, fast_worker_env(LEASE_S))
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
def served_fast(tmp_path: Path, database_url: str) -> Iterator[Served]:
    with fast_server(tmp_path / "home", database_url, job_lease_s=LEASE_S) as served:
        yield served


def _events(api: Any, job_id: str) -> list[dict[str, Any]]:
    body: dict[str, Any] = api.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()
    return list(body["data"])


def _lease_owner_pid(served: Served, job_id: str) -> int:
    """The process id of the worker holding the job (its lease owner is `host:pid:worker`)."""
    with served.platform.db.read_session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.lease_owner is not None
        return int(job.lease_owner.split(":")[1])


def _compute_billed(served: Served, job_id: str) -> list[tuple[list[tuple[int, int]], float]]:
    """Per attempt (in order): its billed (interval, milliseconds), and the seconds from its start
    to the next attempt's start or the job's end (what it can at most have run)."""
    return [(b.intervals, b.wall_s) for b in billed_attempts(served.platform.db, job_id)]


def _said_resumed(event: dict[str, Any]) -> bool:
    return "resumed_from_epoch" in (event["data"] or {})


def test_sigkilled_worker_job_resumes_from_checkpoint_elsewhere(
    served_fast: Served, tmp_path: Path, figures: Figures
) -> None:
    tenant = served_fast.tenant("acme")
    data = breast_cancer_csv(tmp_path / "cancer.csv")
    started = time.monotonic()
    with (
        served_fast.client(tenant.key) as api,
        worker_process(served_fast, tmp_path / "worker-a.log") as a,
        worker_process(served_fast, tmp_path / "worker-b.log") as b,
    ):
        dataset = upload(api, data, "cancer").json()
        # Generous: a fresh worker process first loads torch and the trainers into its forkserver.
        job_in(api, f"/v1/jobs/{dataset['validation_job_id']}", {"succeeded"}, timeout=240)
        validated = time.monotonic()
        job_id = api.post("/v1/training_jobs", json=TRAINING).json()["id"]

        def checkpointed() -> bool:
            return any(e["type"] == "checkpoint" and e["data"]["epoch"] >= 2 for e in _events(api, job_id))

        wait_for(checkpointed, timeout=90, every=0.1)
        victim = {a.pid: a, b.pid: b}[_lease_owner_pid(served_fast, job_id)]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed = time.monotonic()
        saved = [e["data"]["epoch"] for e in _events(api, job_id) if e["type"] == "checkpoint"]
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # its lease has not expired yet

        done = job_in(api, f"/v1/training_jobs/{job_id}", {"succeeded", "failed"}, timeout=240)
        finished = time.monotonic()
        events = _events(api, job_id)
        versions = api.get("/v1/registry/models/cancer/versions").json()["data"]
    billed = _compute_billed(served_fast, job_id)  # the workers have stopped: all is written
    resumed = done["result"]["resumed_from_epoch"]
    epochs = [e["data"]["epoch"] for e in events if e["type"] == "metrics"]
    figures(
        **{
            "epochs": EPOCHS,
            "last checkpoint before the kill": max(saved),
            "resumed from epoch": resumed,
            "the job's event": next(e["message"] for e in events if _said_resumed(e)),
            "attempts": done["attempts"],
            "epochs trained twice": len(epochs) - len(set(epochs)),
            "compute billed per attempt, s (ran, s)": "; ".join(
                f"{sum(ms for _, ms in intervals) / 1000:.1f} ({ran:.1f})" for intervals, ran in billed
            ),
            "seconds: workers start and validate / train until the kill / take over and finish": (
                f"{validated - started:.0f} / {killed - validated:.0f} / {finished - killed:.0f}"
            ),
        }
    )
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert [e["data"]["resumed_from_epoch"] for e in events if _said_resumed(e)] == [resumed]
    assert resumed >= 2  # not from epoch 0
    assert resumed <= max(saved) + 1  # the killed worker's job process died with it
    assert epochs.count(1) == 1 and max(epochs) == EPOCHS
    # After saying so, the second attempt trained from the epoch after its checkpoint to the end.
    said_at = next(i for i, e in enumerate(events) if _said_resumed(e))
    assert [e["data"]["epoch"] for e in events[said_at:] if e["type"] == "metrics"] == list(
        range(resumed + 1, EPOCHS + 1)
    )
    assert [v["version"] for v in versions] == [1]  # the killed attempt registered nothing
    # Compute: one run of intervals per attempt, each interval once, full ones of a second, the
    # last one partial; the killed attempt less than it ran (its last interval is lost), the
    # finished one what it ran to within a poll or two (its process exits just after the job ends).
    assert len(billed) == 2
    for intervals, _ in billed:
        assert [i for i, _ in intervals] == list(range(len(intervals)))
        assert all(ms == 1000 * METER_S for _, ms in intervals[:-1])
        assert all(ms <= 1000 * METER_S for _, ms in intervals[-1:])
    (killed, killed_ran), (finished, finished_ran) = billed
    assert sum(ms for _, ms in killed) <= killed_ran * 1000
    assert (finished_ran - 1.5) * 1000 <= sum(ms for _, ms in finished) <= (finished_ran + 1.0) * 1000
    version_path = served_fast.platform.store.path(f"models/{tenant.org_id}/{versions[0]['id']}")
    predictor = load_artifact(version_path)
    with open(data) as handle:
        rows = [dict(row) for row, _ in zip(csv.DictReader(handle), range(5), strict=False)]
    labels = [row.pop("label") for row in rows]
    predictions = predictor.predict([{k: float(v) for k, v in row.items()} for row in rows])
    assert all(isinstance(p, ClassPrediction) and p.label in {"benign", "malignant"} for p in predictions)
    assert len(labels) == len(predictions)
