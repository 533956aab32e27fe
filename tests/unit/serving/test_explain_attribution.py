"""Attribution mapping and the explainer's arithmetic, without a server: encoded columns summed back
to raw features, tokens without padding, heatmaps, option checks, and integrated gradients on a
linear model, where the exact answer is known (weight × (input − baseline))."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from openmaas.datasets.preprocessing.tabular import FeatureState, TabularPreprocessor
from openmaas.errors import InvalidRequest, ValidationFailed
from openmaas.serving.explain import attribution
from openmaas.serving.explain.explainer import Explainer
from openmaas.serving.explain.options import ExplainLimits, ExplainOptions, parse_options
from openmaas.training.predictor import Predictor

FEATURES = [
    FeatureState("age", "numeric", 40.0, mean=40.0, std=10.0),
    FeatureState("plan", "categorical", "basic", categories=("basic", "pro", "team")),
    FeatureState("noise", "numeric", 0.0),
]


def test_one_hot_columns_sum_back_to_their_feature() -> None:
    widths = attribution.feature_widths(TabularPreprocessor(FEATURES, "onehot"))
    assert widths == [("age", 1), ("plan", 3), ("noise", 1)]
    assert attribution.feature_widths(TabularPreprocessor(FEATURES, "ordinal")) == [
        ("age", 1),
        ("plan", 1),
        ("noise", 1),
    ]
    scores = attribution.per_feature(torch.tensor([[0.5, 0.1, -0.3, 0.05, 0.0], [1, 1, 1, 1, 1.0]]), widths)
    assert scores[0] == pytest.approx({"age": 0.5, "plan": -0.15, "noise": 0.0})
    assert scores[1] == pytest.approx({"age": 1.0, "plan": 3.0, "noise": 1.0})
    with pytest.raises(ValueError):
        attribution.per_feature(torch.zeros(1, 4), widths)


def test_tokens_get_their_summed_scores_and_padding_is_dropped() -> None:
    found = torch.zeros(2, 4, 3)
    found[0, 0] = torch.tensor([1.0, 2.0, -1.0])
    found[0, 1] = torch.tensor([0.5, 0.0, 0.0])
    found[1, 0] = torch.tensor([-1.0, 0.0, 0.0])
    rows = attribution.per_token(found, [["hello", "world"], ["hi"]])
    assert rows == [
        {"tokens": ["hello", "world"], "scores": [2.0, 0.5]},
        {"tokens": ["hi"], "scores": [-1.0]},
    ]


def test_heatmaps_are_pngs_of_the_input_size_brightest_where_attribution_is_largest() -> None:
    found = torch.zeros(3, 5, 7)
    found[1, 2, 6] = -4.0  # magnitude counts, not sign
    found[0, 0, 0] = 1.0
    values = attribution.heatmap(found)
    assert values.shape == (5, 7) and values.max() == 1.0 and values[2, 6] == 1.0 and values[0, 0] == 0.25
    with Image.open(io.BytesIO(base64.b64decode(attribution.heatmap_png(values)))) as image:
        assert image.size == (7, 5) and image.mode == "RGB"
        pixels = np.asarray(image).sum(axis=2)
    assert pixels.argmax() == 2 * 7 + 6 and pixels[4, 4] == 0
    assert attribution.heatmap(torch.zeros(1, 2, 2)).max() == 0.0  # nothing to show: all black
    summary = attribution.pixel_summary(found)
    assert summary["top_pixels"][0] == {"y": 2, "x": 6, "score": -4.0}
    assert summary["total"] == -3.0 and summary["positive"] == 1.0 and summary["negative"] == -4.0


def _options(body: dict[str, Any], task: str = "tabular-classification") -> ExplainOptions:
    def check_rows(rows: list[Any]) -> list[Any]:
        if "age" not in rows[0]:
            raise ValidationFailed("inputs.0.age: missing", param="inputs.0.age")
        return rows

    return parse_options(body, task=task, labels=["no", "yes"], check_rows=check_rows, max_steps=100)


def test_options_are_checked_and_errors_name_the_field() -> None:
    assert _options({}) == ExplainOptions(None, 50, None)
    assert _options({"target": "yes", "steps": 100, "baseline": {"age": 3}}) == ExplainOptions(
        "yes", 100, {"age": 3}
    )
    cases = [
        ({"target": "maybe"}, "tabular-classification", "target"),
        ({"target": 1}, "tabular-classification", "target"),
        ({"target": "yes"}, "tabular-regression", "target"),
        ({"steps": 101}, "tabular-classification", "steps"),
        ({"steps": 1}, "tabular-classification", "steps"),
        ({"baseline": {"plan": "pro"}}, "tabular-classification", "baseline.age"),
        ({"baseline": 2}, "image-classification", "baseline"),
        ({"baseline": "x"}, "text-classification", "baseline"),
    ]
    for body, task, param in cases:
        with pytest.raises(ValidationFailed) as raised:
            _options(body, task)
        assert raised.value.param == param
    assert _options({"baseline": 1}, "image-classification").baseline == 1.0


def _linear_explainer(task: str = "tabular-classification") -> tuple[Explainer, nn.Linear]:
    preprocessor = TabularPreprocessor(FEATURES, "onehot")
    model = nn.Linear(5, 1 if task == "tabular-regression" else 2)
    with torch.no_grad():
        model.weight[:, 4] = 0.0  # the model ignores `noise`
    predictor = Predictor(task, model, preprocessor, labels=["no", "yes"])
    explainer = Explainer(
        predictor,
        task=task,
        labels=["no", "yes"],
        encode=preprocessor.transform,
        limits=ExplainLimits(max_rows=2),
        name="unit",
    )
    return explainer, model


def test_integrated_gradients_on_a_linear_regression_is_exact() -> None:
    explainer, model = _linear_explainer("tabular-regression")
    try:
        rows = [{"age": 60.0, "plan": "team", "noise": 5.0}]
        baseline = {"age": 40.0, "plan": "basic", "noise": 0.0}
        explained = explainer.explain_rows(rows, ExplainOptions(steps=8, baseline=baseline))[0]
        w = model.weight[0].tolist()
        assert explained["attributions"] == pytest.approx(
            {"age": w[0] * 2.0, "plan": w[3] - w[1], "noise": 0.0}, abs=1e-5
        )
        assert explained["convergence_delta"] == pytest.approx(0.0, abs=1e-5)
        assert explained["target"] is None and "value" in explained["prediction"]
        with pytest.raises(ValidationFailed) as too_many:
            explainer.check_rows(rows * 3)
        assert too_many.value.param == "inputs"
    finally:
        explainer.close()


def test_classification_explains_the_chosen_class_and_ignored_features_score_zero() -> None:
    explainer, model = _linear_explainer()
    try:
        rows = [{"age": 70.0, "plan": "pro", "noise": -3.0}]
        mine = explainer.explain_rows(rows, ExplainOptions(target="no", steps=64))[0]
        other = explainer.explain_rows(rows, ExplainOptions(target="yes", steps=64))[0]
        assert mine["target"] == "no" and other["target"] == "yes"
        assert mine["attributions"]["noise"] == 0.0
        for name in ("age", "plan"):  # P(no) = 1 - P(yes): the same scores, opposite signs
            assert mine["attributions"][name] == pytest.approx(-other["attributions"][name], abs=1e-4)
        # Completeness: the scores add up to P(no | input) - P(no | baseline, all zeros), to the delta.
        at_baseline = float(torch.softmax(model(torch.zeros(1, 5)).detach(), dim=1)[0, 0])
        gained = mine["prediction"]["probabilities"]["no"] - at_baseline
        assert sum(mine["attributions"].values()) == pytest.approx(
            gained, abs=abs(mine["convergence_delta"]) + 1e-6
        )
        assert abs(mine["convergence_delta"]) < 0.01
    finally:
        explainer.close()


def test_models_without_gradients_or_features_are_refused() -> None:
    preprocessor = TabularPreprocessor(FEATURES, "onehot")
    limits = ExplainLimits()
    for task, model in (("recommendation", nn.Linear(2, 2)), ("tabular-classification", nn.ReLU())):
        with pytest.raises(InvalidRequest) as refused:
            Explainer(
                Predictor("tabular-classification", model, preprocessor, ["a", "b"]),
                task=task,
                labels=["a", "b"],
                encode=preprocessor.transform,
                limits=limits,
                name="unit",
            )
        assert refused.value.code == "explanations_unsupported" and refused.value.param == "deployment"
