"""Data-parallel ranks on GPUs: NCCL when each rank has a GPU of its own, gloo otherwise, and the
rank's model and shard of the rows on its device. No GPU here: the device is PyTorch's `meta`
device, which stands for any device that is not the CPU (the GPU path itself runs in tests/gpu)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ray", reason="Ray is not installed: pip install 'openmaas[cluster]'")

from openmaas.training.distributed import TorchDataParallel, collective_backend, rank_device


@pytest.mark.parametrize(("gpus", "backend"), [(0.0, "gloo"), (0.5, "gloo"), (1.0, "nccl"), (2.0, "nccl")])
def test_nccl_only_when_each_rank_has_a_whole_gpu(gpus: float, backend: str) -> None:
    assert collective_backend(gpus) == backend


def test_cpu_ranks_stay_on_the_cpu() -> None:
    assert rank_device(0.0) == torch.device("cpu")
    parallel = TorchDataParallel(rank=1, world_size=2)
    x, y = parallel.shard([torch.arange(10.0).reshape(5, 2), torch.arange(5)])
    assert x.device.type == "cpu" and y.tolist() == [1, 3]  # every other row, from this rank's


def test_a_gpu_rank_puts_its_shard_on_its_device() -> None:
    parallel = TorchDataParallel(rank=0, world_size=2, device=torch.device("meta"))
    x, y = parallel.shard([torch.ones(6, 3), torch.zeros(6)])
    assert x.device.type == "meta" and y.device.type == "meta"
    assert x.shape == (3, 3) and y.shape == (3,)
