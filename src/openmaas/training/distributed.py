"""Data-parallel training of a tabular `train` job (`workers: N`) on the Ray cluster its attempt
runs on.

Ray Train's `TorchTrainer` starts N worker processes (one placement group, spread over the nodes;
DDP over gloo, or over NCCL when each rank has a GPU of its own). Each rank runs the task's own
trainer and the shared loop (`training/loop.py`) on its shard of the training rows, with the
global batch split among the ranks; the weights stay the same on every rank, so each evaluates
and decides early stopping alike. Rank 0 alone talks to the platform, through the same three calls
a local run makes: metrics become job events, checkpoints files in the job's folder of the shared
store, and at the end it writes the artifact and registers the version in the transaction that
ends the job.

Node death: a rank's process or node lost, Ray Train restarts the whole group (`FailureConfig`),
on whatever nodes remain, and every rank resumes from the latest checkpoint in the store; rank 0's
events say which start it is and where the ranks run. The attempt's own actor lost (its node died),
the worker retries the attempt, which resumes the same way.

Stop (cancel, pause, shutdown): the attempt's stop flag reaches rank 0 through a small control
actor; the ranks agree on it before each batch (one all-reduce of a flag), stop together at the
last checkpoint, and return normally, so that Ray Train does not count a stop as a failure.

Imports Ray and torch.distributed: loaded only for jobs with `workers` > 1.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import ray
import torch
import torch.distributed as dist
from pydantic import BaseModel
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from openmaas import errors
from openmaas.clock import SystemClock
from openmaas.db.database import Database
from openmaas.jobs.executor import Resources
from openmaas.jobs.queue import Claim
from openmaas.jobs.ray_executor import near_this_process, release_orphaned_groups, where
from openmaas.jobs.run import JobRun, JobStopped
from openmaas.storage import open_store
from openmaas.training.checkpoint import State
from openmaas.training.context import CheckpointFolder
from openmaas.training.job_context import JobTrainingContext
from openmaas.training.jobs import TrainingParams, finish_training
from openmaas.training.loop import TrainingStopped
from openmaas.training.train import train

# How often Ray Train restarts a failed worker group (a node lost) before the attempt fails.
MAX_GROUP_RESTARTS = 3
# How often Ray Train tries again to start the group when it could not: its placement group not
# placed within RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s by default: the nodes left after a
# loss have no room for the workers), or a worker dying while it starts. Ray's default is to try
# for ever, which leaves the job running without training; once these are used up the attempt
# fails, saying why, and the worker retries it (`max_attempts`), by when nodes may have joined.
MAX_START_FAILURES = 3
STOP_POLL_S = 0.25


class TrainingControl:
    """Shared by the attempt and its ranks: the stop flag, how often the group started, and how
    the run ended (a Ray actor reserving no CPU)."""

    def __init__(self) -> None:
        self._stop = False
        self._starts = 0
        self._outcome: dict[str, Any] | None = None

    def request_stop(self) -> None:
        self._stop = True

    def stop_requested(self) -> bool:
        return self._stop

    def group_started(self) -> int:
        self._starts += 1
        return self._starts

    def ended(self, outcome: dict[str, Any]) -> None:
        self._outcome = outcome

    def outcome(self) -> dict[str, Any] | None:
        return self._outcome


class RankJob(BaseModel):
    """What each rank needs to rebuild the job's run (crosses the process boundary as JSON)."""

    claim: Claim
    database_url: str
    storage_url: str
    params: TrainingParams
    dataset_path: str


def train_data_parallel(run: JobRun[TrainingParams], dataset_path: str) -> None:
    """Train the job's model on `params.workers` Ray Train workers; returns once rank 0 registered
    the version (the job succeeded), raises JobStopped when stopped."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2.api.config import FailureConfig
    from ray.train.v2.api.exceptions import ControllerError

    params = run.params
    if not ray.is_initialized():
        raise errors.ValidationFailed(
            "workers > 1 trains on a Ray cluster: run this job with the ray executor (OPENMAAS_EXECUTOR=ray)",
            param="workers",
        )
    held = Resources(
        cpus=params.cpus_per_worker * params.workers, gpus=params.gpus_per_worker * params.workers
    )
    run.holds(held)
    # On the attempt's own node: it must live as long as the attempt (a control actor on a node
    # that dies would fail every restarted group, as rank 0 asks it which start this is).
    control: Any = (
        ray.remote(num_cpus=0)(TrainingControl).options(scheduling_strategy=near_this_process()).remote()
    )
    job = RankJob(
        claim=run.claim,
        database_url=run.db.url,
        storage_url=run.store.url,
        params=params,
        dataset_path=dataset_path,
    )
    resources = {"CPU": params.cpus_per_worker, "GPU": params.gpus_per_worker}
    trainer = TorchTrainer(
        _rank_main,
        train_loop_config={"job": job.model_dump_json(), "control": control},
        torch_config=TorchConfig(backend=collective_backend(params.gpus_per_worker)),
        scaling_config=ScalingConfig(
            num_workers=params.workers,
            use_gpu=params.gpus_per_worker > 0,
            resources_per_worker={key: value for key, value in resources.items() if value},
            placement_strategy="SPREAD",
        ),
        run_config=RunConfig(
            name=f"{run.job_id}-attempt-{run.claim.attempt}",
            storage_path=str(Path(tempfile.gettempdir()) / "openmaas-ray-train"),
            failure_config=FailureConfig(
                max_failures=MAX_GROUP_RESTARTS, controller_failure_limit=MAX_START_FAILURES
            ),
        ),
    )
    run.event(
        "log",
        f"Training {params.task} on {params.dataset} with {params.workers} Ray Train workers.",
        {"executor": "ray", "workers": params.workers, "cpus_per_worker": params.cpus_per_worker},
    )
    _release_earlier_groups(run)
    done = threading.Event()
    watcher = threading.Thread(target=_forward_stop, args=(run, control, done), daemon=True)
    watcher.start()
    try:
        trainer.fit()
    except ControllerError as exc:
        raise WorkersNotStarted(params.workers, resources, exc.controller_failure) from exc
    finally:
        done.set()
    outcome = cast("dict[str, Any] | None", ray.get(control.outcome.remote()))
    if outcome is None:
        raise RuntimeError("the Ray Train workers ended without a result")
    if outcome["status"] == "stopped":
        raise JobStopped(outcome["message"])
    if outcome["status"] == "invalid":
        raise errors.ValidationFailed(outcome["message"], param=outcome.get("param"))


class WorkersNotStarted(RuntimeError):
    """Ray Train could not start the workers: after `MAX_START_FAILURES` + 1 tries, or at once
    when it knows the cluster can never hold them (an autoscaling cluster's largest size)."""

    def __init__(self, workers: int, resources: dict[str, float], cause: BaseException) -> None:
        each = ", ".join(f"{value:g} {key}" for key, value in resources.items() if value)
        super().__init__(
            f"Ray Train could not start {workers} workers ({each} each): the cluster's nodes may "
            f"have no room left for them (a node lost?). {type(cause).__name__}: {cause}"
        )


def _release_earlier_groups(run: JobRun[Any]) -> None:
    """Give back what workers of an earlier attempt whose controller died with its node still
    reserve (`release_orphaned_groups`), so that this attempt's workers can start."""
    for group_id in release_orphaned_groups():
        run.event(
            "log",
            f"Released placement group {group_id[:12]}, left by the workers of an attempt whose node died.",
            {"released_placement_group": group_id},
        )


def _forward_stop(run: JobRun[Any], control: Any, done: threading.Event) -> None:
    while not done.wait(STOP_POLL_S):
        if run.should_stop():
            control.request_stop.remote()
            return


def collective_backend(gpus_per_worker: float) -> str:
    """The process group's backend: NCCL when each rank has a GPU of its own, else gloo (CPU
    ranks, and ranks sharing a GPU, which NCCL refuses; gloo reduces CUDA tensors too)."""
    return "nccl" if gpus_per_worker >= 1 else "gloo"


def rank_device(gpus_per_worker: float) -> torch.device:
    """Where this rank's model and its shard of the data live: the GPU Ray gave it, or the CPU."""
    if gpus_per_worker > 0:
        from ray.train.torch import get_device

        return cast("torch.device", get_device())
    return torch.device("cpu")


class TorchDataParallel:
    """This rank's `DataParallel` (see `training.loop`) over the process group Ray Train set up,
    on `device`: the model and its shard of the rows go there, and so do the all-reduced values
    (NCCL reduces only CUDA tensors). Evaluation's rows stay on the CPU: `predict_batched` moves
    them to the model's device and its outputs back."""

    def __init__(self, rank: int, world_size: int, device: torch.device | None = None) -> None:
        self.rank = rank
        self.world_size = world_size
        self.device = device or torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.device.type == "cpu":
            return DistributedDataParallel(model)
        model.to(self.device)  # in place: the loop keeps using `model` itself
        return DistributedDataParallel(model, device_ids=[self.device])

    def shard(self, data: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        # Every rank gets as many rows (at most world_size - 1 rows are left out), so all run as
        # many batches: each batch is one all-reduce every rank must join.
        per_rank = len(data[0]) // self.world_size
        index = torch.arange(self.rank, per_rank * self.world_size, self.world_size)
        return [tensor[index].to(self.device) for tensor in data]

    def mean(self, value: float) -> float:
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total) / self.world_size

    def any(self, flag: bool) -> bool:
        found = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(found, op=dist.ReduceOp.MAX)
        return bool(found)


class RankContext:
    """The `TrainingContext` of one rank: rank 0 reports and checkpoints through the job's own
    context; the others only read checkpoints (from the shared store) to resume alike."""

    def __init__(
        self,
        parallel: TorchDataParallel,
        checkpoints: CheckpointFolder,
        job: JobTrainingContext | None,
        stop_requested: Callable[[], bool],
    ) -> None:
        self.parallel = parallel
        self._checkpoints = checkpoints
        self._job = job
        self._stop_requested = stop_requested

    def report(self, metrics: dict[str, Any]) -> None:
        if self._job is not None:
            self._job.report(metrics)

    def save_checkpoint(self, state: State) -> None:
        if self._job is not None:
            self._job.save_checkpoint(state)

    def latest_checkpoint(self) -> State | None:
        return self._job.latest_checkpoint() if self._job is not None else self._checkpoints.latest()

    def should_stop(self) -> bool:
        return self.parallel.any(self._stop_requested())


def _rank_main(config: dict[str, Any]) -> None:
    """One Ray Train worker: train on this rank's shard; rank 0 also registers the result."""
    import ray.train

    _map_tables()
    job = RankJob.model_validate_json(config["job"])
    control = config["control"]
    context_info = ray.train.get_context()
    parallel = TorchDataParallel(
        context_info.get_world_rank(),
        context_info.get_world_size(),
        rank_device(job.params.gpus_per_worker),
    )
    places: list[dict[str, Any] | None] = [None] * parallel.world_size
    dist.all_gather_object(places, {**where(), "rank": parallel.rank})
    db = Database(job.database_url)
    store = open_store(job.storage_url)
    stop = _StopPoller(control) if parallel.rank == 0 else None
    run = JobRun(
        db=db,
        store=store,
        clock=SystemClock(),
        claim=job.claim,
        params=job.params,
        stop_requested=stop.requested if stop is not None else (lambda: False),
    )
    params = job.params
    job_context = JobTrainingContext(run, params.epochs) if parallel.rank == 0 else None
    checkpoints = CheckpointFolder(store, f"{store.job_dir(job.claim.job_id)}/checkpoints")
    context = RankContext(parallel, checkpoints, job_context, run.should_stop)
    try:
        if parallel.rank == 0:
            _announce(run, ray.get(control.group_started.remote()), places)
        with store.reading(job.dataset_path) as path:
            trained = train(params.task, path, params.params, params.preprocessing, context)
        if job_context is not None:
            trained.model.cpu()  # the artifact is written from CPU tensors
            job_context.flush()
            finish_training(run, trained, job_context.resumed_from or 0)
            ray.get(control.ended.remote({"status": "succeeded"}))
    except TrainingStopped as stopped:
        if parallel.rank == 0:
            ray.get(control.ended.remote({"status": "stopped", "message": str(stopped)}))
    except errors.OpenMaaSError as exc:  # the job's input: the same on every rank, no retry helps
        if parallel.rank == 0:
            ray.get(control.ended.remote({"status": "invalid", "message": exc.message, "param": exc.param}))
    finally:
        if job_context is not None:
            job_context.flush()
        if stop is not None:
            stop.close()
        db.dispose()


def _map_tables() -> None:
    """Map the tables a rank writes and those their foreign keys name (a Ray Train worker is a
    fresh process: nothing imported them; the serving tables above this package name these, not
    the reverse)."""
    import importlib

    for package in ("billing", "datasets", "jobs", "metering", "registry", "tenancy"):
        importlib.import_module(f"openmaas.{package}.tables")
    importlib.import_module("openmaas.datasets.file_tables")


def _announce(run: JobRun[Any], start: int, places: list[dict[str, Any] | None]) -> None:
    nodes = ", ".join(f"rank {p['rank']} on {p['node_ip']} ({p['node_id'][:12]})" for p in places if p)
    from ray.util.placement_group import get_current_placement_group

    group = get_current_placement_group()
    data = {
        "executor": "ray",
        "group_start": start,
        "workers": places,
        "placement_group": group.id.hex() if group is not None else None,
    }
    if start == 1:
        run.event("log", f"Ray Train workers started: {nodes}.", data)
        return
    run.event(
        "log",
        f"Ray Train restarted the workers after a failure (start {start}): {nodes}; "
        "they resume from the latest checkpoint.",
        data,
        level="warning",
    )


class _StopPoller:
    """Rank 0's view of the stop flag: read from the control actor in a thread, not per batch."""

    def __init__(self, control: Any) -> None:
        self._control = control
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def requested(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self._closed.set()

    def _poll(self) -> None:
        while not self._closed.wait(STOP_POLL_S):
            try:
                if ray.get(self._control.stop_requested.remote(), timeout=5):
                    self._stop.set()
                    return
            except ray.exceptions.RayError:
                return  # the attempt is gone: Ray ends this group with it
