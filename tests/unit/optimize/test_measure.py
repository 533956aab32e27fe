"""The judging and measuring rules of optimisation: metric drops against the threshold and
`force`, method names, per-architecture refusals, p50 timing and pruning sparsity."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from openmaas import errors
from openmaas.optimize.measure import file_sizes, judge, latency_notes, p50_ms, refuse
from openmaas.optimize.methods import check_fits, parse_method
from openmaas.optimize.pruning import prune

CLASSIFY = "tabular-classification"


def test_a_drop_within_the_threshold_is_accepted() -> None:
    verdict = judge(CLASSIFY, {"accuracy": 0.90}, {"accuracy": 0.895}, max_drop=0.01, force=False)
    assert verdict.accepted and not verdict.forced
    assert verdict.drop == pytest.approx(0.005) and verdict.change == pytest.approx(-0.005)


def test_a_gain_is_no_drop() -> None:
    verdict = judge("tabular-regression", {"r2": 0.5}, {"r2": 0.6}, max_drop=0.0, force=False)
    assert verdict.accepted and verdict.drop == 0.0 and verdict.change == pytest.approx(0.1)


def test_a_larger_drop_is_refused_unless_forced() -> None:
    refused = judge(CLASSIFY, {"accuracy": 0.90}, {"accuracy": 0.85}, max_drop=0.01, force=False)
    assert not refused.accepted
    error = refuse(refused, 0.01)
    assert error.code == "metric_drop" and error.param == "max_metric_drop"
    assert "0.0500" in error.message and "force=true" in error.message
    forced = judge(CLASSIFY, {"accuracy": 0.90}, {"accuracy": 0.85}, max_drop=0.01, force=True)
    assert forced.accepted and forced.forced
    assert not judge(CLASSIFY, {"accuracy": 0.9}, {"accuracy": 0.9}, max_drop=0.0, force=True).forced


def test_methods_parse_or_name_the_field() -> None:
    assert parse_method("dynamic-int8").quantize == "dynamic"
    assert parse_method("static-int8").quantize == "static" and parse_method("onnx-fp32").onnx
    pruned = parse_method("prune-30")
    assert not pruned.onnx and pruned.prune_fraction == pytest.approx(0.3)
    for bad in ("prune-0", "prune-99", "prune-x", "int4", ""):
        with pytest.raises(errors.ValidationFailed) as refused:
            parse_method(bad)
        assert refused.value.param == "method"


def test_models_without_a_rebuildable_test_split_are_refused() -> None:
    check_fits(CLASSIFY, "mlp", parse_method("onnx-fp32"))
    with pytest.raises(errors.ValidationFailed) as refused:
        check_fits("recommendation", "matrix_factorization", parse_method("onnx-fp32"))
    assert refused.value.code == "not_optimizable"


def test_p50_is_the_median_of_the_timed_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count()
    # Each call takes one more "second" than the last: the median of 1..5 is 3.
    times = iter(float(t) for t in [0, 1, 1, 3, 3, 6, 6, 10, 10, 15])
    monkeypatch.setattr("openmaas.optimize.measure.time.perf_counter", lambda: next(times))
    assert p50_ms(lambda: next(ticks), warmup=2, timed=5) == pytest.approx(3000.0)
    assert next(ticks) == 7  # 2 warm-up + 5 timed calls


def test_slower_results_are_noted() -> None:
    notes = latency_notes(
        {"p50_batch_1": 1.0, "p50_batch_32": 2.0}, {"p50_batch_1": 0.5, "p50_batch_32": 3.0}
    )
    assert len(notes) == 1 and notes[0].startswith("p50_batch_32")


def test_pruning_zeroes_the_smallest_weights_and_keeps_the_file_size(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 10), torch.nn.ReLU(), torch.nn.Linear(10, 4))
    dense = tmp_path / "dense.safetensors"
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(dense))
    largest = model[0].weight.abs().max().item()
    stats = prune(model, 0.3)
    assert stats["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert model[0].weight.abs().max().item() == largest  # the large weights stay
    assert float((model[2].weight == 0).float().mean()) == pytest.approx(0.3, abs=0.03)
    sparse = tmp_path / "sparse.safetensors"
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(sparse))
    before, after = file_sizes(dense), file_sizes(sparse)
    assert after["bytes"] == before["bytes"] and after["compressed_bytes"] < before["compressed_bytes"]


def test_methods_measured_to_hurt_an_architecture_need_force() -> None:
    with pytest.raises(errors.ValidationFailed) as refused:
        check_fits("image-classification", "small_resnet", parse_method("dynamic-int8"))
    assert refused.value.code == "method_not_useful" and refused.value.param == "method"
    check_fits("image-classification", "small_resnet", parse_method("dynamic-int8"), force=True)
    check_fits("image-classification", "small_resnet", parse_method("static-int8"))
    check_fits("text-classification", "lstm", parse_method("dynamic-int8"))


def test_an_undefined_metric_cannot_be_judged_and_nan_becomes_null() -> None:
    from openmaas.optimize.measure import finite_json

    with pytest.raises(errors.ValidationFailed) as refused:
        judge("tabular-regression", {"r2": float("nan")}, {"r2": 0.5}, max_drop=0.01, force=True)
    assert refused.value.code == "metric_unavailable"
    assert finite_json({"a": [1.0, float("inf")], "b": {"c": float("nan")}}) == {
        "a": [1.0, None],
        "b": {"c": None},
    }
