"""One data-parallel rank's training path without Ray: a gloo process group of one rank, the
task's own trainer wrapped in DDP (`TorchDataParallel`), as each Ray Train worker runs it. A
regression trains through DDP as well as locally, and a stopped run resumes from its checkpoint
(the model is wrapped before the optimizer's state is loaded)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch.distributed as dist

from openmaas.training.context import InMemoryContext
from openmaas.training.loop import TrainingStopped
from openmaas.training.train import train
from tests.data.builders import diabetes_csv

pytest.importorskip("ray", reason="Ray is not installed: pip install 'openmaas[cluster]'")

from openmaas.training.distributed import TorchDataParallel


class RankContext(InMemoryContext):
    parallel = TorchDataParallel(rank=0, world_size=1)


@pytest.fixture(scope="module")
def process_group() -> Iterator[None]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_regression_trains_through_ddp_and_resumes(process_group: None, tmp_path: Path) -> None:
    path = diabetes_csv(tmp_path / "diabetes.csv")
    params = {"epochs": 60, "target": "target"}
    context = RankContext(stop_when=lambda c: len(c.reports) >= 5)
    with pytest.raises(TrainingStopped):
        train("tabular-regression", path, {**params, "checkpoint_overhead": 0}, None, context)
    assert context.checkpoints_saved >= 4
    context._stop_when = None
    trained = train("tabular-regression", path, params, None, context)
    assert trained.resumed_from_epoch >= 4
    assert trained.metrics["r2"] >= 0.4  # local training's bar on this data
